"""Indexes the webhook path reads through, so that it stays flat as the books grow.

With a million past invoices (`bench.webhooks --history 1000000`), three reads of the
refund and credit-note path scanned whole tables (~70 ms each on this machine): the payment
a refunded charge settled, found by its payment intent; the amount already credited against
an invoice; and the issue time of the latest credit note, read under the credit notes'
series lock — so every credit note waited for the one before to finish its scan, and
`subscription.updated` + `charge.refunded` fell from ~220 to 15 events/s.

On a database that size the three indexes take about 1.3 s to build (0.6 + 0.4 + 0.2 s on
the development machine), during which writes to `transactions` and `invoices` wait.

Revision ID: 0014_webhook_indexes
Revises: 0013_hot_rollups
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014_webhook_indexes"
down_revision: str | None = "0013_hot_rollups"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_transactions_stripe_payment_intent", "transactions", ["stripe_payment_intent"]
    )
    op.create_index("ix_invoices_credited_invoice_id", "invoices", ["credited_invoice_id"])
    # The latest document of a kind: `WHERE kind = … ORDER BY id DESC LIMIT 1`.
    op.create_index("ix_invoices_kind_id", "invoices", ["kind", "id"])


def downgrade() -> None:
    op.drop_index("ix_invoices_kind_id", "invoices")
    op.drop_index("ix_invoices_credited_invoice_id", "invoices")
    op.drop_index("ix_transactions_stripe_payment_intent", "transactions")
