"""Recording Stripe's payments and refunds: the invoice for each paid Stripe invoice, a
credit note for each refund, and the ledger (`transactions`) behind both."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select, union_all
from sqlalchemy.orm import Session

from meterbill.auth.models import User
from meterbill.billing.gateway import StripeGateway
from meterbill.billing.stripe_objects import invoice_payment_intent
from meterbill.config import Catalog, Settings
from meterbill.errors import MeterbillError
from meterbill.invoicing.amounts import (
    line_price_id,
    lines_from_stripe_invoice,
    stripe_reported_tax,
)
from meterbill.invoicing.credit_notes import issue_credit_note
from meterbill.invoicing.documents import (
    CREDIT_NOTE_SERIES,
    INVOICE_SERIES,
    issue_document_number,
    write_document,
)
from meterbill.invoicing.models import Invoice, PendingDocument, Transaction
from meterbill.invoicing.parties import (
    Buyer,
    buyer_of,
    is_reverse_charge,
    missing_seller_fields,
    seller_snapshot,
)

__all__ = [
    "CREDIT_NOTE_SERIES",
    "INVOICE_SERIES",
    "issue_credit_note",
    "issue_document_number",
    "issue_paid_invoice",
    "record_failed_payment",
    "record_invoice_payment",
    "record_refunds",
]
log = logging.getLogger("meterbill.invoicing")


def _stamp(value: Any) -> datetime | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return datetime.fromtimestamp(value, tz=UTC)
    return None


def _rates(catalog: Catalog, stripe_invoice: dict[str, Any]) -> Callable[[str | None], int]:
    """The VAT rate of each Stripe price: its plan's, else the invoice's plan's."""
    lines = (stripe_invoice.get("lines") or {}).get("data") or []
    known = [catalog.plan_for_price(line_price_id(line)) for line in lines]
    fallback = next((plan.vat_rate_bp for plan in known if plan), None)
    default = fallback if fallback is not None else catalog.plan("free").vat_rate_bp

    def rate_for_price(price_id: str | None) -> int:
        plan = catalog.plan_for_price(price_id)
        return plan.vat_rate_bp if plan else default

    return rate_for_price


def record_invoice_payment(
    session: Session,
    user_id: str,
    stripe_invoice: dict[str, Any],
    event_id: str,
    now: datetime,
    *,
    settings: Settings,
    catalog: Catalog,
    gateway: StripeGateway,
) -> Invoice | None:
    """Issue the local invoice for a paid Stripe invoice and record the payment, once.

    Returns None when that Stripe invoice already has its local invoice (a redelivery, or
    the twin `invoice.paid` / `invoice.payment_succeeded` event), was for nothing, or must
    wait: while the seller's identity French law requires is incomplete, the payment is
    recorded and the invoice kept unnumbered in `pending_documents` (see
    `invoicing.pending`). The caller holds the user's row lock, so twins for one user run
    one after the other.
    """
    stripe_invoice_id = str(stripe_invoice.get("id") or "")
    paid = int(stripe_invoice.get("amount_paid") or stripe_invoice.get("total") or 0)
    if not stripe_invoice_id or paid <= 0:
        return None
    seen = union_all(
        select(Invoice.id).where(Invoice.stripe_invoice_id == stripe_invoice_id),
        select(PendingDocument.id).where(PendingDocument.stripe_invoice_id == stripe_invoice_id),
    )
    if session.execute(seen).first() is not None:
        return None
    intent = invoice_payment_intent(stripe_invoice) or _intent_at_stripe(gateway, stripe_invoice_id)
    user = session.get(User, user_id)
    buyer = buyer_of(gateway, stripe_invoice, user.email if user else None)  # may call Stripe
    currency = str(stripe_invoice.get("currency") or "eur").upper()
    invoice, early = None, []
    if missing_seller_fields(settings):
        session.add(
            PendingDocument(
                kind="invoice",
                user_id=user_id,
                stripe_invoice_id=stripe_invoice_id,
                amount=paid,
                payload=json.dumps(stripe_invoice, separators=(",", ":"), default=str),
                buyer=json.dumps(asdict(buyer), ensure_ascii=False, sort_keys=True),
                event_id=event_id,
                received_at=now,
            )
        )
        log.warning(
            "invoice waits for the seller's identity",
            extra={"stripe_invoice": stripe_invoice_id, "missing": missing_seller_fields(settings)},
        )
    else:
        # Read before the number is taken: the series stays locked from then to the commit.
        early = early_refunds(session, stripe_invoice_id, intent)
        invoice = issue_paid_invoice(
            session, user_id, stripe_invoice, buyer, now, settings=settings, catalog=catalog
        )
    session.add(
        Transaction(
            user_id=user_id,
            invoice_id=invoice.id if invoice else None,
            type="payment",
            amount=paid,
            currency=currency,
            stripe_payment_intent=intent,
            stripe_invoice_id=stripe_invoice_id,
            stripe_charge_id=_charge_id(stripe_invoice.get("charge")),
            stripe_object_id=f"payment:{stripe_invoice_id}",
            stripe_event_id=event_id,
            created_at=now,
        )
    )
    if invoice is not None:
        credit_early_refunds(session, invoice, early, settings, now)
    return invoice


def issue_paid_invoice(
    session: Session,
    user_id: str,
    stripe_invoice: dict[str, Any],
    buyer: Buyer,
    now: datetime,
    *,
    settings: Settings,
    catalog: Catalog,
) -> Invoice:
    """Number and write the invoice of a paid Stripe invoice (no Stripe call: the buyer
    is given). A business buyer in another EU member state whom Stripe charged no VAT is
    invoiced under reverse charge ("Autoliquidation", category AE)."""
    reverse_charge = is_reverse_charge(settings.seller_vat_number, buyer.vat_number) and not (
        stripe_reported_tax(stripe_invoice)
    )
    lines = lines_from_stripe_invoice(
        stripe_invoice,
        _rates(catalog, stripe_invoice),
        settings.seller_vat_exempt,
        reverse_charge=reverse_charge and not settings.seller_vat_exempt,
    )
    periods = [(line.period_start, line.period_end) for line in lines if line.period_end]
    transitions = stripe_invoice.get("status_transitions") or {}
    return write_document(
        session,
        series=INVOICE_SERIES,
        kind="invoice",
        user_id=user_id,
        currency=str(stripe_invoice.get("currency") or "eur").upper(),
        lines=lines,
        seller=seller_snapshot(settings),
        buyer=buyer,
        now=now,
        zone=settings.seller_timezone,
        status="paid",
        stripe_invoice_id=str(stripe_invoice.get("id") or ""),
        paid_at=_stamp(transitions.get("paid_at")) or now,
        service_start=min((s for s, _ in periods if s), default=None),
        service_end=max((e for _, e in periods if e), default=None),
    )


def _invoice_payments(gateway: StripeGateway | None, **query: str) -> list[dict[str, Any]]:
    """Invoice payments asked of Stripe; none when Stripe is not configured or fails."""
    if gateway is None or not gateway.configured:
        return []
    try:
        return gateway.list_invoice_payments(**query)
    except MeterbillError:
        log.warning("invoice payments unavailable at Stripe", extra=query)
        return []


def _intent_at_stripe(gateway: StripeGateway, stripe_invoice_id: str) -> str | None:
    """The payment intent that paid the invoice, when the event did not include it."""
    payments = _invoice_payments(gateway, invoice_id=stripe_invoice_id)
    payments.sort(key=lambda payment: payment.get("status") != "paid")
    return invoice_payment_intent({"payments": {"data": payments}})


def _charge_id(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def early_refunds(
    session: Session, stripe_invoice_id: str, intent: str | None
) -> list[Transaction]:
    """Refunds recorded before their invoice (events arrive in any order; an invoice may
    wait for the seller's identity), oldest first."""
    matches = [Transaction.stripe_invoice_id == stripe_invoice_id]
    if intent:
        matches.append(Transaction.stripe_payment_intent == intent)
    return list(
        session.scalars(
            select(Transaction)
            .where(
                Transaction.type == "refund",
                Transaction.invoice_id.is_(None),
                or_(*matches),
            )
            .order_by(Transaction.id)
        )
    )


def credit_early_refunds(
    session: Session,
    invoice: Invoice,
    early: list[Transaction],
    settings: Settings,
    now: datetime,
) -> None:
    """The `early_refunds` of an invoice get their invoice and credit notes now."""
    for refund in early:
        refund.invoice_id, refund.stripe_invoice_id = invoice.id, invoice.stripe_invoice_id
        issue_credit_note(
            session, invoice, refund.stripe_object_id or "", -refund.amount, settings, now
        )


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
            stripe_invoice_id=str(stripe_invoice.get("id") or "") or None,
            stripe_object_id=f"failed:{event_id}",
            stripe_event_id=event_id,
            created_at=now,
        )
    )


def _paid_transaction(
    session: Session, charge: dict[str, Any], gateway: StripeGateway | None
) -> Transaction | None:
    """The payment a charge settled: by payment intent, else by the charge's invoice (old
    API versions), else by the charge id, else by the invoice Stripe says the payment
    intent paid."""
    intent = charge.get("payment_intent")
    intent_id = intent.get("id") if isinstance(intent, dict) else intent
    conditions = []
    if intent_id:
        conditions.append(Transaction.stripe_payment_intent == intent_id)
    invoice_id = _charge_id(charge.get("invoice"))
    if invoice_id:
        conditions.append(Transaction.stripe_invoice_id == invoice_id)
    if charge.get("id"):
        conditions.append(Transaction.stripe_charge_id == charge["id"])
    for condition in conditions:
        found = session.scalars(
            select(Transaction).where(condition, Transaction.type == "payment")
        ).first()
        if found is not None:
            return found
    if intent_id:  # the payment was recorded without its intent: ask Stripe for the invoice
        for payment in _invoice_payments(gateway, payment_intent=intent_id):
            invoice_id = _charge_id(payment.get("invoice"))
            found = session.scalars(
                select(Transaction).where(
                    Transaction.stripe_invoice_id == invoice_id, Transaction.type == "payment"
                )
            ).first()
            if invoice_id and found is not None:
                return found
    return None


def _charge_refunds(session: Session, charge: dict[str, Any]) -> list[tuple[str, int]]:
    """(refund key, amount) of the charge's refunds that count.

    Today's API no longer embeds `refunds` in a charge: then the refund is the part of the
    cumulative `amount_refunded` not recorded yet, keyed by that cumulative amount, so
    several partial refunds each count once, in whatever order their events arrive.
    """
    charge_id = str(charge.get("id") or "")
    refunds = [
        (f"refund:{refund.get('id')}", int(refund.get("amount") or 0))
        for refund in ((charge.get("refunds") or {}).get("data") or [])
        if isinstance(refund, dict) and refund.get("status") not in ("failed", "canceled")
    ]
    if refunds:
        return refunds
    cumulative = int(charge.get("amount_refunded") or 0)
    recorded = -int(
        session.scalar(
            select(func.coalesce(func.sum(Transaction.amount), 0)).where(
                Transaction.type == "refund", Transaction.stripe_charge_id == charge_id
            )
        )
        or 0
    )
    if cumulative <= recorded:
        return []
    return [(f"refund:{charge_id}:refunded:{cumulative}", cumulative - recorded)]


def record_refunds(
    session: Session,
    user_id: str,
    charge: dict[str, Any],
    event_id: str,
    now: datetime,
    *,
    settings: Settings,
    gateway: StripeGateway | None = None,
) -> int:
    """Record each refund of a charge not recorded yet, as a negative ledger entry, and
    issue a credit note for it against the invoice it refunds."""
    intent = charge.get("payment_intent")
    intent_id = intent.get("id") if isinstance(intent, dict) else intent
    paid = _paid_transaction(session, charge, gateway)
    invoice = session.get(Invoice, paid.invoice_id) if paid and paid.invoice_id else None
    charge_id = str(charge.get("id") or "") or None
    ceiling = int(charge.get("amount_refunded") or 0)
    already = -int(
        session.scalar(
            select(func.coalesce(func.sum(Transaction.amount), 0)).where(
                Transaction.type == "refund", Transaction.stripe_charge_id == charge_id
            )
        )
        or 0
    )
    recorded = 0
    for key, amount in _charge_refunds(session, charge):
        seen = session.scalars(
            select(Transaction.id).where(Transaction.stripe_object_id == key)
        ).first()
        if seen is not None or amount <= 0:
            continue
        if ceiling and already + amount > ceiling:  # never more than Stripe says
            amount = ceiling - already
            if amount <= 0:
                continue
        already += amount
        session.add(
            Transaction(
                user_id=user_id,
                invoice_id=invoice.id if invoice else None,
                type="refund",
                amount=-amount,
                currency=str(charge.get("currency") or "eur").upper(),
                stripe_payment_intent=intent_id,
                stripe_invoice_id=paid.stripe_invoice_id if paid else None,
                stripe_charge_id=charge_id,
                stripe_object_id=key,
                stripe_event_id=event_id,
                created_at=now,
            )
        )
        if invoice is not None:
            issue_credit_note(session, invoice, key, amount, settings, now)
        else:
            log.warning(
                "refund recorded without an invoice yet",
                extra={"charge": charge_id, "payment_intent": intent_id},
            )
        recorded += 1
    return recorded
