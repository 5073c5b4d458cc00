"""Monthly totals updated in place: ingestion and consume update `usage_monthly` on every
event, and an index holding `total` (the console's ranking index of 0010_console) made
each of those updates write new index entries instead of a heap-only (HOT) update. The
console's top consumers now read the month's rows through an index on (month, metric)
and keep the highest few; the rollups leave room on their pages for updated rows.

Revision ID: 0013_hot_rollups
Revises: 0012_devx
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013_hot_rollups"
down_revision: str | None = "0012_devx"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_usage_monthly_ranking", "usage_monthly")
    op.create_index("ix_usage_monthly_month_metric", "usage_monthly", ["month", "metric"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE usage_monthly SET (fillfactor = 80)")
        op.execute("ALTER TABLE usage_daily SET (fillfactor = 80)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE usage_daily RESET (fillfactor)")
        op.execute("ALTER TABLE usage_monthly RESET (fillfactor)")
    op.drop_index("ix_usage_monthly_month_metric", "usage_monthly")
    op.create_index(
        "ix_usage_monthly_ranking", "usage_monthly", ["month", "metric", "total", "user_id"]
    )
