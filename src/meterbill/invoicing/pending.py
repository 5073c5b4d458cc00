"""Documents waiting for the seller's identity.

French law (art. 242 nonies A of annex II to the CGI) requires the seller's name, address,
SIREN and VAT number (unless under the VAT franchise) on every invoice. While settings lack
any of them, a paid invoice (or a refund's credit note) is not numbered: the payment is
recorded, and the document waits in `pending_documents`. Once the settings are complete,
they are issued in arrival order — when the service starts, and by the worker's schedule.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from meterbill.auth.service import lock_user
from meterbill.config import Catalog, Settings
from meterbill.db import Database
from meterbill.invoicing.credit_notes import issue_credit_note
from meterbill.invoicing.models import Invoice, PendingDocument, Transaction
from meterbill.invoicing.parties import Buyer, missing_seller_fields
from meterbill.invoicing.service import credit_early_refunds, early_refunds, issue_paid_invoice

log = logging.getLogger("meterbill.invoicing")


def pending_count(session: Session) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(PendingDocument)
            .where(PendingDocument.issued_at.is_(None))
        )
        or 0
    )


def invoicing_readiness(session: Session, settings: Settings) -> dict[str, Any]:
    """What `/readyz` says about invoicing: the seller settings still missing, how many
    paid documents wait for them, and the last `meterbill invoices audit`."""
    from meterbill.invoicing.audit import last_audit

    missing = missing_seller_fields(settings)
    return {
        "seller_identity": "incomplete" if missing else "complete",
        "missing_settings": missing,
        "pending_documents": pending_count(session),
        "last_audit": last_audit(session),
    }


def _issue_one(
    session: Session, pending: PendingDocument, settings: Settings, catalog: Catalog, now: datetime
) -> Invoice | None:
    if pending.kind == "credit_note":
        credited = session.get_one(Invoice, pending.credited_invoice_id)
        return issue_credit_note(
            session, credited, pending.refund_key or "", pending.amount, settings, now
        )
    issued = session.scalars(
        select(Invoice).where(Invoice.stripe_invoice_id == pending.stripe_invoice_id)
    ).first()
    if issued is not None:
        return None
    buyer_fields = json.loads(pending.buyer or "{}")
    buyer = Buyer(**buyer_fields) if buyer_fields else Buyer(None, None)
    stripe_invoice = json.loads(pending.payload)
    payment_key = f"payment:{pending.stripe_invoice_id}"
    intent = session.scalar(
        select(Transaction.stripe_payment_intent).where(Transaction.stripe_object_id == payment_key)
    )
    early = early_refunds(session, str(stripe_invoice.get("id") or ""), intent)
    invoice = issue_paid_invoice(
        session, pending.user_id, stripe_invoice, buyer, now, settings=settings, catalog=catalog
    )
    session.execute(
        update(Transaction)
        .where(Transaction.stripe_object_id == payment_key)
        .values(invoice_id=invoice.id)
    )
    credit_early_refunds(session, invoice, early, settings, now)
    return invoice


def issue_pending_documents(
    db: Database,
    settings: Settings,
    catalog: Catalog,
    clock: Callable[[], datetime],
    on_issued: Callable[[Session, Invoice], None] | None = None,
) -> list[str]:
    """Issue every waiting document, oldest first, one transaction each; the numbers
    issued. Nothing happens while the seller's identity is incomplete.

    Each document takes its user's lock before its number, in the order webhooks do, so
    it never deadlocks with them; a document another process is issuing is skipped.
    """
    if missing_seller_fields(settings):
        return []
    with db.reading() as session:
        waiting = list(
            session.scalars(
                select(PendingDocument.id)
                .where(PendingDocument.issued_at.is_(None))
                .order_by(PendingDocument.id)
            )
        )
    numbers: list[str] = []
    for pending_id in waiting:
        with db.transaction() as session:
            user_id = session.scalar(
                select(PendingDocument.user_id).where(PendingDocument.id == pending_id)
            )
            if user_id is None:
                continue
            lock_user(session, user_id)
            pending = session.scalars(
                select(PendingDocument)
                .where(PendingDocument.id == pending_id, PendingDocument.issued_at.is_(None))
                .with_for_update(skip_locked=True)
            ).first()
            if pending is None:
                continue
            now = clock()
            document = _issue_one(session, pending, settings, catalog, now)
            pending.issued_at = now
            pending.issued_invoice_id = document.id if document else None
            if document is not None:
                numbers.append(document.invoice_number)
                if on_issued is not None:
                    on_issued(session, document)
    if numbers:
        log.info("waiting documents issued", extra={"numbers": numbers})
    return numbers
