"""usage metering: the daily peak for `max` meters, monthly totals, and quota alerts

Revision ID: 0004_usage
Revises: 0003_invoicing
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_usage"
down_revision: str | None = "0003_invoicing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "usage_daily", sa.Column("peak", sa.BigInteger(), nullable=False, server_default="0")
    )
    op.create_table(
        "usage_monthly",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("peak", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["saas_users.id"],
            name=op.f("fk_usage_monthly_user_id_saas_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "metric", "month", name=op.f("pk_usage_monthly")),
    )
    # Existing daily totals (peak unknown before this revision: 0) become monthly ones.
    op.execute(
        "INSERT INTO usage_monthly (user_id, metric, month, total, events, peak) "
        "SELECT user_id, metric, substr(CAST(day AS TEXT), 1, 7), sum(total), sum(events), 0 "
        "FROM usage_daily GROUP BY user_id, metric, substr(CAST(day AS TEXT), 1, 7)"
    )
    op.create_table(
        "usage_alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.Column("limit", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["saas_users.id"],
            name=op.f("fk_usage_alerts_user_id_saas_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_alerts")),
        sa.UniqueConstraint("user_id", "metric", "month", "level", name="uq_usage_alerts_crossing"),
    )
    # Alerts still to hand to notifications are found without scanning delivered ones.
    op.create_index(
        "ix_usage_alerts_pending",
        "usage_alerts",
        ["id"],
        postgresql_where=sa.text("notified_at IS NULL"),
        sqlite_where=sa.text("notified_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_usage_alerts_pending", table_name="usage_alerts")
    op.drop_table("usage_alerts")
    op.drop_table("usage_monthly")
    with op.batch_alter_table("usage_daily") as batch_op:
        batch_op.drop_column("peak")
