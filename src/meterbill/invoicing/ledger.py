"""Reading documents and the ledger: a user's invoices, one invoice with its lines, and an
invoice's balance derived from its transactions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from meterbill.errors import InvoiceNotFound
from meterbill.invoicing.models import Invoice, InvoiceLine, Transaction


@dataclass(frozen=True)
class InvoiceBalance:
    """Where an invoice stands, in cents, from the `transactions` ledger alone."""

    total: int  # TTC invoiced
    paid: int  # payments received
    refunded: int  # refunds given back (positive)
    credited: int  # TTC of the credit notes issued against it (positive)

    @property
    def net_paid(self) -> int:
        return self.paid - self.refunded

    @property
    def due(self) -> int:
        """What the customer still owes (0 for a paid invoice; a refund owes nothing)."""
        return max(self.total - self.paid, 0)

    @property
    def status(self) -> str:
        if self.refunded and self.refunded >= self.paid:
            return "refunded"
        if self.refunded:
            return "partially_refunded"
        return "paid" if self.due == 0 else "due"


def invoice_balance(session: Session, invoice: Invoice) -> InvoiceBalance:
    """The invoice's balance: sum of its payments and refunds in the ledger."""
    sums = dict(
        session.execute(
            select(Transaction.type, func.coalesce(func.sum(Transaction.amount), 0))
            .where(Transaction.invoice_id == invoice.id)
            .group_by(Transaction.type)
        )
        .tuples()
        .all()
    )
    credited = session.scalar(
        select(func.coalesce(func.sum(Invoice.amount), 0)).where(
            Invoice.credited_invoice_id == invoice.id
        )
    )
    return InvoiceBalance(
        total=invoice.amount,
        paid=int(sums.get("payment", 0)),
        refunded=-int(sums.get("refund", 0)),
        credited=-int(credited or 0),
    )


def list_documents(
    session: Session, user_id: str, page: int, per_page: int
) -> tuple[list[Invoice], int]:
    """The user's invoices and credit notes, newest first, and how many there are."""
    total = session.scalar(
        select(func.count()).select_from(Invoice).where(Invoice.user_id == user_id)
    )
    rows = session.scalars(
        select(Invoice)
        .where(Invoice.user_id == user_id)
        .order_by(Invoice.issued_at.desc(), Invoice.id.desc())
        .offset((page - 1) * per_page)
        .limit(per_page)
    ).all()
    return list(rows), int(total or 0)


def find_document(session: Session, number: str, user_id: str | None = None) -> Invoice:
    """The document with this number; another user's number is not found either."""
    query = select(Invoice).where(Invoice.invoice_number == number)
    if user_id is not None:
        query = query.where(Invoice.user_id == user_id)
    document = session.scalars(query).one_or_none()
    if document is None:
        raise InvoiceNotFound()
    return document


def lines_of(session: Session, document: Invoice) -> list[InvoiceLine]:
    return list(
        session.scalars(
            select(InvoiceLine)
            .where(InvoiceLine.invoice_id == document.id)
            .order_by(InvoiceLine.position)
        )
    )


def number_of(session: Session, invoice_id: int | None) -> str | None:
    if invoice_id is None:
        return None
    return session.scalar(select(Invoice.invoice_number).where(Invoice.id == invoice_id))


def credit_note_numbers(session: Session, document: Invoice) -> list[str]:
    return list(
        session.scalars(
            select(Invoice.invoice_number)
            .where(Invoice.credited_invoice_id == document.id)
            .order_by(Invoice.id)
        )
    )


def seller_of(document: Invoice) -> dict[str, Any]:
    value = json.loads(document.seller or "{}")
    return value if isinstance(value, dict) else {}


def documents_of_month(session: Session, month: str) -> list[Invoice]:
    """Every document issued in `month` (YYYY-MM), in number order per series."""
    return list(
        session.scalars(
            select(Invoice)
            .where(Invoice.period == month)
            .order_by(Invoice.kind.desc(), Invoice.issued_at, Invoice.id)
        )
    )
