"""operator console: admin accounts, sessions, audit log, shared secrets; overview indexes

Revision ID: 0010_console
Revises: 0009_misc
Create Date: 2026-11-25 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_console"
down_revision: str | None = "0009_misc"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "admin_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_sign_in_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_users")),
        sa.UniqueConstraint("email", name=op.f("uq_admin_users_email")),
    )
    op.create_table(
        "admin_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("admin_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["admin_id"],
            ["admin_users.id"],
            name=op.f("fk_admin_sessions_admin_id_admin_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_admin_sessions_token_hash")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=320), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_created_at", "audit_log", ["created_at"])
    op.create_index("ix_audit_log_target", "audit_log", ["target"])
    op.create_table(
        "app_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_app_secrets")),
    )
    # What the console's overview and lists read, so they cost the same at any size.
    # (period, amount_ht): the revenue per month is summed from the index alone.
    op.create_index("ix_invoices_period_amount_ht", "invoices", ["period", "amount_ht"])
    op.create_index("ix_saas_users_email", "saas_users", ["email"])
    if op.get_bind().dialect.name == "postgresql":
        # Prefix search (LIKE 'abc%') can use these whatever the database's collation.
        op.execute("CREATE INDEX ix_saas_users_id_prefix ON saas_users (id varchar_pattern_ops)")
        op.execute(
            "CREATE INDEX ix_saas_users_email_prefix ON saas_users (email varchar_pattern_ops)"
        )
    op.create_index("ix_saas_subscriptions_status_plan", "saas_subscriptions", ["status", "plan"])
    op.create_index("ix_saas_subscriptions_end_date", "saas_subscriptions", ["end_date"])
    op.create_index("ix_billing_events_outcome_id", "billing_events", ["outcome", "id"])
    op.create_index(
        "ix_usage_monthly_ranking", "usage_monthly", ["month", "metric", "total", "user_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_usage_monthly_ranking", "usage_monthly")
    op.drop_index("ix_billing_events_outcome_id", "billing_events")
    op.drop_index("ix_saas_subscriptions_end_date", "saas_subscriptions")
    op.drop_index("ix_saas_subscriptions_status_plan", "saas_subscriptions")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_saas_users_email_prefix", "saas_users")
        op.drop_index("ix_saas_users_id_prefix", "saas_users")
    op.drop_index("ix_saas_users_email", "saas_users")
    op.drop_index("ix_invoices_period_amount_ht", "invoices")
    op.drop_table("app_secrets")
    op.drop_index("ix_audit_log_target", "audit_log")
    op.drop_index("ix_audit_log_created_at", "audit_log")
    op.drop_table("audit_log")
    op.drop_table("admin_sessions")
    op.drop_table("admin_users")
