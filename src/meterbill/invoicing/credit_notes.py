"""Credit notes: ``AVOIR-YYYYMM-XXXX``, one per refund, crediting part or all of an
invoice with the VAT in proportion."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from meterbill.config import Settings
from meterbill.db import insert_for
from meterbill.invoicing.amounts import LineDraft, credit_note_lines
from meterbill.invoicing.documents import CREDIT_NOTE_SERIES, write_document
from meterbill.invoicing.models import Invoice, InvoiceLine, PendingDocument
from meterbill.invoicing.parties import Buyer, missing_seller_fields, seller_snapshot


def _wait_for_seller(
    session: Session, invoice: Invoice, refund_key: str, amount: int, now: datetime
) -> None:
    """Keep the credit note to issue once the seller's identity is complete."""
    session.execute(
        insert_for(session)(PendingDocument)
        .values(
            kind="credit_note",
            user_id=invoice.user_id,
            refund_key=refund_key,
            credited_invoice_id=invoice.id,
            amount=amount,
            payload="{}",
            buyer="{}",
            received_at=now,
        )
        .on_conflict_do_nothing(index_elements=["refund_key"])
    )


def issue_credit_note(
    session: Session,
    invoice: Invoice,
    refund_key: str,
    amount: int,
    settings: Settings,
    now: datetime,
) -> Invoice | None:
    """Issue the credit note ``AVOIR-YYYYMM-XXXX`` giving back `amount` cents (TTC) of
    `invoice`, once per refund; never more than what is left to credit on the invoice."""
    if session.scalars(select(Invoice.id).where(Invoice.stripe_refund_id == refund_key)).first():
        return None
    credited = -int(
        session.scalar(
            select(func.coalesce(func.sum(Invoice.amount), 0)).where(
                Invoice.credited_invoice_id == invoice.id
            )
        )
        or 0
    )
    amount = min(amount, invoice.amount - credited)
    if amount <= 0:
        return None
    if missing_seller_fields(settings):
        _wait_for_seller(session, invoice, refund_key, amount, now)
        return None
    source = session.scalars(
        select(InvoiceLine)
        .where(InvoiceLine.invoice_id == invoice.id)
        .order_by(InvoiceLine.position)
    ).all()
    drafts = [
        LineDraft(
            line.description,
            line.quantity,
            line.unit_price_ht,
            line.vat_rate_bp,
            line.amount_ht,
            line.amount_tva,
            line.amount_ttc,
            line.period_start,
            line.period_end,
            line.vat_category,
        )
        for line in source
    ]
    buyer = Buyer(
        invoice.buyer_name,
        invoice.buyer_email,
        (invoice.buyer_address or "").splitlines(),
        invoice.buyer_vat_number,
        json.loads(invoice.buyer_identity or "{}"),
    )
    return write_document(
        session,
        series=CREDIT_NOTE_SERIES,
        kind="credit_note",
        user_id=invoice.user_id,
        currency=invoice.currency,
        lines=credit_note_lines(drafts, amount),
        seller=seller_snapshot(settings),
        buyer=buyer,
        now=now,
        zone=settings.seller_timezone,
        status="refunded",
        stripe_refund_id=refund_key,
        credited_invoice_id=invoice.id,
        paid_at=now,
        service_start=invoice.service_start,
        service_end=invoice.service_end,
    )
