"""billing events: the customer they are about, and when a same-second tie was settled

Revision ID: 0006_fold
Revises: 0005_plan_changes
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_fold"
down_revision: str | None = "0005_plan_changes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("billing_events") as batch:
        batch.add_column(sa.Column("stripe_customer_id", sa.String(length=255), nullable=True))
        batch.add_column(
            sa.Column("snapshot_fetched_ms", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.create_index("ix_billing_events_outcome_customer", ["outcome", "stripe_customer_id"])


def downgrade() -> None:
    with op.batch_alter_table("billing_events") as batch:
        batch.drop_index("ix_billing_events_outcome_customer")
        batch.drop_column("snapshot_fetched_ms")
        batch.drop_column("stripe_customer_id")
