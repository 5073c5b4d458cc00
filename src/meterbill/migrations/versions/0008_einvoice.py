"""e-invoicing: documents waiting for the seller's identity, VAT categories, the buyer's
identity, seals (SHA-256 of each document's PDF and XML, chained per series) and audit runs

Revision ID: 0008_einvoice
Revises: 0007_usage_limits
Create Date: 2026-11-25 17:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_einvoice"
down_revision: str | None = "0007_usage_limits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch copy): on SQLite a batch copy would drop the triggers
    # that keep issued invoices immutable.
    op.add_column(
        "invoices", sa.Column("buyer_identity", sa.Text(), nullable=False, server_default="{}")
    )
    op.add_column(
        "invoice_lines",
        sa.Column("vat_category", sa.String(length=2), nullable=False, server_default="S"),
    )
    op.create_table(
        "pending_documents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("stripe_invoice_id", sa.String(length=255), nullable=True),
        sa.Column("refund_key", sa.String(length=255), nullable=True),
        sa.Column("credited_invoice_id", sa.Integer(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("buyer", sa.Text(), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_invoice_id", sa.Integer(), nullable=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["saas_users.id"],
            name=op.f("fk_pending_documents_user_id_saas_users"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["credited_invoice_id"],
            ["invoices.id"],
            name=op.f("fk_pending_documents_credited_invoice_id_invoices"),
        ),
        sa.ForeignKeyConstraint(
            ["issued_invoice_id"],
            ["invoices.id"],
            name=op.f("fk_pending_documents_issued_invoice_id_invoices"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_documents")),
        sa.UniqueConstraint(
            "stripe_invoice_id", name=op.f("uq_pending_documents_stripe_invoice_id")
        ),
        sa.UniqueConstraint("refund_key", name=op.f("uq_pending_documents_refund_key")),
    )
    op.create_index(
        op.f("ix_pending_documents_user_id"), "pending_documents", ["user_id"], unique=False
    )
    op.create_table(
        "document_seals",
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("series", sa.String(length=16), nullable=False),
        sa.Column("pdf_sha256", sa.String(length=64), nullable=False),
        sa.Column("xml_sha256", sa.String(length=64), nullable=False),
        sa.Column("previous_hash", sa.String(length=64), nullable=True),
        sa.Column("chain_hash", sa.String(length=64), nullable=False),
        sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_document_seals_invoice_id_invoices"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("invoice_id", name=op.f("pk_document_seals")),
        sa.UniqueConstraint("chain_hash", name=op.f("uq_document_seals_chain_hash")),
    )
    op.create_table(
        "audit_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ran_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("documents", sa.Integer(), nullable=False),
        sa.Column("problems", sa.Integer(), nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_runs")),
    )
    _refuse_changes_to_seals()


def _refuse_changes_to_seals() -> None:
    """A seal is written once, like the document it fingerprints."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER document_seals_immutable BEFORE UPDATE OR DELETE ON document_seals "
            "FOR EACH ROW EXECUTE FUNCTION meterbill_refuse_change()"
        )
        return
    for action in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER document_seals_no_{action.lower()} BEFORE {action} "
            "ON document_seals BEGIN SELECT RAISE(ABORT, 'issued invoices are immutable'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS document_seals_immutable ON document_seals")
    else:
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS document_seals_no_{action}")
    op.drop_table("audit_runs")
    op.drop_table("document_seals")
    op.drop_index(op.f("ix_pending_documents_user_id"), table_name="pending_documents")
    op.drop_table("pending_documents")
    op.drop_column("invoice_lines", "vat_category")
    op.drop_column("invoices", "buyer_identity")
