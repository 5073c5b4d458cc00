"""The month's invoices and credit notes as CSV, for the accountant."""

from __future__ import annotations

import csv
import re
from decimal import Decimal
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.errors import InvalidMonth
from meterbill.invoicing.ledger import documents_of_month
from meterbill.invoicing.models import Invoice, InvoiceLine

COLUMNS = [
    "numero",
    "type",
    "date_emission",
    "facture_origine",
    "client",
    "email_client",
    "tva_client",
    "devise",
    "total_ht",
    "total_tva",
    "total_ttc",
    "taux_tva",
    "stripe_invoice_id",
]
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def _decimal(cents: int) -> str:
    return f"{Decimal(cents) / 100:.2f}"


def write_month_csv(session: Session, month: str, out: TextIO) -> int:
    """Write one row per document issued in `month` (YYYY-MM); how many rows."""
    if not _MONTH.match(month):
        raise InvalidMonth()
    documents = documents_of_month(session, month)
    numbers = {d.id: d.invoice_number for d in documents}
    missing = {d.credited_invoice_id for d in documents if d.credited_invoice_id} - set(numbers)
    if missing:
        numbers.update(
            session.execute(
                select(Invoice.id, Invoice.invoice_number).where(Invoice.id.in_(missing))
            )
            .tuples()
            .all()
        )
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for document in documents:
        rates = sorted(
            set(
                session.scalars(
                    select(InvoiceLine.vat_rate_bp).where(InvoiceLine.invoice_id == document.id)
                )
            )
        )
        writer.writerow(
            [
                document.invoice_number,
                "avoir" if document.kind == "credit_note" else "facture",
                document.issued_at.date().isoformat(),
                numbers.get(document.credited_invoice_id or 0, ""),
                document.buyer_name or "",
                document.buyer_email or "",
                document.buyer_vat_number or "",
                document.currency,
                _decimal(document.amount_ht),
                _decimal(document.amount_tva),
                _decimal(document.amount),
                "|".join(f"{Decimal(rate) / 100:.2f}" for rate in rates),
                document.stripe_invoice_id or "",
            ]
        )
    return len(documents)
