"""A second live subscription of one user is canceled at Stripe at once, and what it charged
is refunded in full.

Checkout keeps one session open per user (billing.checkout), yet two subscriptions can
still appear: two sessions paid in the same second, a subscription made from Stripe's
dashboard. The user keeps the first subscription that pays (`active` or `trialing`,
oldest first; the oldest one past due, unpaid or incomplete when none pays) and every
other such one is canceled now (a `paused` one is left alone: it bills nothing). The one
kept decides the user's plan from the start (billing.subscriptions.deciding_subscription),
so neither the second subscription's arrival nor its cancellation changes the plan. The
canceled one was bought by mistake moments ago: its paid invoice is refunded in full to
the card, not credited pro rata to a balance the kept subscription would then consume.
Stripe's cancel defaults (`invoice_now` and `prorate` false) bill nothing more.

Stripe is called with no database transaction open: the webhook that revealed the second
subscription is applied and committed first, then this runs (billing.webhooks), and the
`duplicates` schedule runs it again for any user still holding two, e.g. when Stripe
failed meanwhile. Idempotency keys per subscription and per invoice make a second run
(a redelivery, two workers) get Stripe's first answers: one cancellation, one refund.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from meterbill.billing.gateway import StripeGateway
from meterbill.billing.models import BillingEvent, Subscription
from meterbill.billing.plans import record_answer
from meterbill.billing.stripe_objects import invoice_payment_intent
from meterbill.billing.subscriptions import (
    BILLABLE_STATUSES,
    FINAL_STATUSES,
    deciding_subscription,
)
from meterbill.config import Catalog, Settings
from meterbill.db import Database, insert_for

log = logging.getLogger("meterbill.billing")

DUPLICATE_EVENT = "meterbill.duplicate_subscription_canceled"


def duplicates_of(session: Session, user_id: str) -> tuple[str | None, list[str]]:
    """The subscription the user keeps, and the live ones beside it to cancel."""
    rows = list(
        session.scalars(
            select(Subscription)
            .where(Subscription.user_id == user_id, Subscription.status.in_(BILLABLE_STATUSES))
            .order_by(Subscription.start_date, Subscription.id)
        )
    )
    kept = deciding_subscription(rows)
    if kept is None or len(rows) < 2:
        return None, []
    return kept.stripe_subscription_id, [
        row.stripe_subscription_id for row in rows if row is not kept
    ]


def cancel_duplicate_subscriptions(
    db: Database,
    settings: Settings,
    catalog: Catalog,
    gateway: StripeGateway,
    user_id: str,
    now: datetime,
) -> list[str]:
    """Cancel and refund every live subscription of the user beside the one kept; returns
    the ids canceled."""
    with db.reading() as session:
        kept, extra = duplicates_of(session, user_id)
    if not extra or not gateway.configured:
        return []
    canceled: list[str] = []
    for subscription_id in extra:
        current = gateway.fetch_subscription(subscription_id)
        if current.object.get("status") in FINAL_STATUSES:
            # Ended at Stripe already (e.g. an `incomplete` one expired), its event lost or
            # late: record what Stripe says; nothing to cancel or refund.
            record_answer(db, catalog, settings, user_id, current, now)
            continue
        answer = gateway.cancel_subscription_now(
            subscription_id, f"meterbill-duplicate-cancel-{subscription_id}"
        )
        refund = _refund_latest_invoice(gateway, answer.object, user_id)
        record_answer(db, catalog, settings, user_id, answer, now)
        _record(db, user_id, str(kept), subscription_id, refund, answer.at, now)
        log.warning(
            "second live subscription canceled and refunded",
            extra={
                "user_id": user_id,
                "kept": kept,
                "canceled": subscription_id,
                "refund": refund.get("id") if refund else None,
            },
        )
        canceled.append(subscription_id)
    return canceled


def _refund_latest_invoice(
    gateway: StripeGateway, subscription: dict[str, Any], user_id: str
) -> dict[str, Any] | None:
    invoice_id = _id(subscription.get("latest_invoice"))
    if invoice_id is None:
        return None
    invoice = gateway.retrieve_invoice(invoice_id)
    paid = int(invoice.get("amount_paid") or 0)
    if invoice.get("status") != "paid" or paid <= 0:
        return None  # nothing was charged: canceling is enough
    intent = invoice_payment_intent(invoice)
    if intent is None:
        payments = gateway.list_invoice_payments(invoice_id=invoice_id)
        intent = invoice_payment_intent({"payments": {"data": payments}})
    if intent is None:
        log.error("no payment to refund on a duplicate's invoice", extra={"invoice": invoice_id})
        return None
    return gateway.refund_payment(
        intent,
        {"reason": "duplicate_subscription", "invoice": invoice_id, "user_id": user_id},
        f"meterbill-duplicate-refund-{invoice_id}",
    )


def _id(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _record(
    db: Database,
    user_id: str,
    kept: str,
    canceled: str,
    refund: dict[str, Any] | None,
    at: int,
    now: datetime,
) -> None:
    """Write down, once per canceled subscription, what was canceled and refunded."""
    payload = {
        "kept": kept,
        "canceled": canceled,
        "refund": refund.get("id") if refund else None,
        "refunded_amount": int(refund.get("amount") or 0) if refund else 0,
        "currency": refund.get("currency") if refund else None,
    }
    with db.transaction() as session:
        session.execute(
            insert_for(session)(BillingEvent)
            .values(
                stripe_event_id=f"duplicate:{canceled}",
                event_type=DUPLICATE_EVENT,
                user_id=user_id,
                payload=json.dumps(payload, separators=(",", ":")),
                stripe_subscription_id=canceled,
                stripe_created=at,
                outcome="applied",
                received_at=now,
            )
            .on_conflict_do_nothing(index_elements=["stripe_event_id"])
        )


def users_with_duplicates(db: Database) -> list[str]:
    """Users holding more than one live subscription."""
    with db.reading() as session:
        return list(
            session.scalars(
                select(Subscription.user_id)
                .where(Subscription.status.in_(BILLABLE_STATUSES))
                .group_by(Subscription.user_id)
                .having(func.count(Subscription.id) > 1)
            )
        )
