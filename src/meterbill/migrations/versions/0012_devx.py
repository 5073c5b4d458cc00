"""API key scopes: what each server-to-server key may do (`ingest`, `read`, `admin`)

Keys made before scopes existed keep every scope, so they work exactly as before.

Revision ID: 0012_devx
Revises: 0011_partitions
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_devx"
down_revision: str | None = "0011_partitions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column(
                "scopes", sa.String(length=64), nullable=False, server_default="ingest read admin"
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("scopes")
