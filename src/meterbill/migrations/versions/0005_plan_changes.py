"""plan changes: what Stripe says is pending on a subscription (cancellation at the
period's end, the schedule that downgrades it) and the downgrade meterbill asked for

Revision ID: 0005_plan_changes
Revises: 0004_usage
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_plan_changes"
down_revision: str | None = "0004_usage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (
    "cancel_at_period_end",
    "cancel_at",
    "stripe_schedule_id",
    "pending_plan",
    "pending_plan_at",
    "pending_schedule_id",
)


def upgrade() -> None:
    with op.batch_alter_table("saas_subscriptions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "cancel_at_period_end", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
        batch_op.add_column(sa.Column("cancel_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("stripe_schedule_id", sa.String(255), nullable=True))
        batch_op.add_column(sa.Column("pending_plan", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("pending_plan_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("pending_schedule_id", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("saas_subscriptions", schema=None) as batch_op:
        for name in reversed(_COLUMNS):
            batch_op.drop_column(name)
