"""Issuing invoices and credit notes with gapless numbers, and keeping the ledger."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.billing.stripe_objects import invoice_payment_intent
from meterbill.db import insert_for
from meterbill.invoicing.models import DocumentSequence, Invoice, Transaction

INVOICE_SERIES = "FACT"
CREDIT_NOTE_SERIES = "AVOIR"


def issue_document_number(session: Session, series: str, when: datetime) -> str:
    """The next number of `series` for the month of `when`: ``FACT-YYYYMM-0001`` onwards.

    The counter row is incremented in the caller's transaction and stays locked until it
    ends, so concurrent issuers queue, and a rollback gives the number back: no gap, no
    duplicate. Past 9999 the counter simply gets wider.
    """
    period = when.strftime("%Y%m")
    insert = insert_for(session)
    statement = (
        insert(DocumentSequence)
        .values(series=series, period=period, last_number=1)
        .on_conflict_do_update(
            index_elements=["series", "period"],
            set_={"last_number": DocumentSequence.last_number + 1},
        )
        .returning(DocumentSequence.last_number)
    )
    number = session.execute(statement).scalar_one()
    return f"{series}-{period}-{number:04d}"


def record_invoice_payment(
    session: Session, user_id: str, stripe_invoice: dict[str, Any], event_id: str, now: datetime
) -> Invoice | None:
    """Issue the local invoice for a paid Stripe invoice and record the payment, once.

    Returns None when that Stripe invoice already has its local invoice (a redelivery, or
    the twin `invoice.paid` / `invoice.payment_succeeded` event) or was for nothing.
    """
    stripe_invoice_id = str(stripe_invoice.get("id") or "")
    amount = int(stripe_invoice.get("amount_paid") or stripe_invoice.get("total") or 0)
    if not stripe_invoice_id or amount <= 0:
        return None
    existing = session.scalars(
        select(Invoice).where(Invoice.stripe_invoice_id == stripe_invoice_id)
    ).one_or_none()
    if existing is not None:
        return None
    currency = str(stripe_invoice.get("currency") or "eur").upper()
    invoice = Invoice(
        invoice_number=issue_document_number(session, INVOICE_SERIES, now),
        kind="invoice",
        user_id=user_id,
        period=now.strftime("%Y-%m"),
        amount=amount,
        currency=currency,
        status="paid",
        stripe_invoice_id=stripe_invoice_id,
        issued_at=now,
    )
    session.add(invoice)
    session.flush()
    session.add(
        Transaction(
            user_id=user_id,
            invoice_id=invoice.id,
            type="payment",
            amount=amount,
            currency=currency,
            stripe_payment_intent=invoice_payment_intent(stripe_invoice),
            stripe_object_id=f"payment:{stripe_invoice_id}",
            stripe_event_id=event_id,
            created_at=now,
        )
    )
    return invoice


def record_failed_payment(
    session: Session, user_id: str, stripe_invoice: dict[str, Any], event_id: str, now: datetime
) -> None:
    """Keep a failed attempt in the ledger (amount 0: no money moved)."""
    session.add(
        Transaction(
            user_id=user_id,
            type="failed_payment",
            amount=0,
            currency=str(stripe_invoice.get("currency") or "eur").upper(),
            stripe_payment_intent=invoice_payment_intent(stripe_invoice),
            stripe_object_id=f"failed:{event_id}",
            stripe_event_id=event_id,
            created_at=now,
        )
    )


def record_refunds(
    session: Session, user_id: str, charge: dict[str, Any], event_id: str, now: datetime
) -> int:
    """Record each refund of a charge not recorded yet, as a negative ledger entry."""
    refunds = (charge.get("refunds") or {}).get("data") or []
    intent = charge.get("payment_intent")
    intent_id = intent.get("id") if isinstance(intent, dict) else intent
    paid = None
    if intent_id:
        paid = session.scalars(
            select(Transaction).where(
                Transaction.stripe_payment_intent == intent_id, Transaction.type == "payment"
            )
        ).first()
    if not refunds and charge.get("amount_refunded"):
        refunds = [{"id": f"{charge.get('id')}:refunded", "amount": charge["amount_refunded"]}]
    recorded = 0
    for refund in refunds:
        refund_id = str(refund.get("id"))
        seen = session.scalars(
            select(Transaction.id).where(Transaction.stripe_object_id == f"refund:{refund_id}")
        ).first()
        if seen is not None:
            continue
        session.add(
            Transaction(
                user_id=user_id,
                invoice_id=paid.invoice_id if paid else None,
                type="refund",
                amount=-int(refund.get("amount") or 0),
                currency=str(charge.get("currency") or "eur").upper(),
                stripe_payment_intent=intent_id,
                stripe_object_id=f"refund:{refund_id}",
                stripe_event_id=event_id,
                created_at=now,
            )
        )
        recorded += 1
    return recorded
