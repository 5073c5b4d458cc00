"""invoicing: invoice lines, amounts before tax and VAT, seller and buyer, credit notes,
ledger links; triggers that keep issued invoices immutable

Revision ID: 0003_invoicing
Revises: 0001
Create Date: 2026-11-25 12:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_invoicing"
down_revision: str | None = "0002_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_IMMUTABLE = ("invoices", "invoice_lines")


def upgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("amount_ht", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("amount_tva", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("stripe_refund_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("service_start", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("service_end", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("seller", sa.Text(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("buyer_name", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("buyer_email", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("buyer_address", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("buyer_vat_number", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_invoices_stripe_refund_id"), ["stripe_refund_id"], unique=True
        )

    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stripe_invoice_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("stripe_charge_id", sa.String(length=255), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_transactions_stripe_invoice_id"), ["stripe_invoice_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_transactions_stripe_charge_id"), ["stripe_charge_id"], unique=False
        )

    op.create_table(
        "invoice_lines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("unit_price_ht", sa.String(length=32), nullable=False),
        sa.Column("vat_rate_bp", sa.Integer(), nullable=False),
        sa.Column("amount_ht", sa.BigInteger(), nullable=False),
        sa.Column("amount_tva", sa.BigInteger(), nullable=False),
        sa.Column("amount_ttc", sa.BigInteger(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_invoice_lines_invoice_id_invoices"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_lines")),
    )
    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_invoice_lines_invoice_id"), ["invoice_id"], unique=False
        )

    _create_immutability_triggers()


def _create_immutability_triggers() -> None:
    """An issued invoice is never changed (French law): the database itself refuses."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION meterbill_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'issued invoices are immutable (% on %)', "
            "TG_OP, TG_TABLE_NAME; END $$"
        )
        for table in _IMMUTABLE:
            op.execute(
                f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION meterbill_refuse_change()"
            )
        return
    for table in _IMMUTABLE:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                "BEGIN SELECT RAISE(ABORT, 'issued invoices are immutable'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _IMMUTABLE:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}")
        op.execute("DROP FUNCTION IF EXISTS meterbill_refuse_change()")
    else:
        for table in _IMMUTABLE:
            for action in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invoice_lines_invoice_id"))
    op.drop_table("invoice_lines")
    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transactions_stripe_charge_id"))
        batch_op.drop_index(batch_op.f("ix_transactions_stripe_invoice_id"))
        batch_op.drop_column("stripe_charge_id")
        batch_op.drop_column("stripe_invoice_id")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invoices_stripe_refund_id"))
        for column in (
            "buyer_vat_number",
            "buyer_address",
            "buyer_email",
            "buyer_name",
            "seller",
            "service_end",
            "service_start",
            "paid_at",
            "stripe_refund_id",
            "amount_tva",
            "amount_ht",
        ):
            batch_op.drop_column(column)
