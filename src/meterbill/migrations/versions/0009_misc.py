"""demo_database: the mark `meterbill demo` leaves on a database made for it

Revision ID: 0009_misc
Revises: 0008_einvoice
Create Date: 2026-11-25 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_misc"
down_revision: str | None = "0008_einvoice"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "demo_database",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_demo_database")),
    )


def downgrade() -> None:
    op.drop_table("demo_database")
