"""Reconciliation with Stripe: heal the subscriptions whose webhooks were missed or lost.

For each customer whose state may be stale — a subscription past due (or unpaid,
incomplete), or no Stripe event and no reconciliation for `METERBILL_RECONCILE_STALE_DAYS`
— meterbill lists the customer's subscriptions from Stripe. Where Stripe's state differs
from the local row (or the row is missing), it records a synthetic
``customer.subscription.updated|deleted`` event carrying Stripe's object, through the same
path as a real webhook: the fold (`billing.subscriptions`) applies it in order with the
others, the user's plan is synced, and the plan-change webhook goes out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, or_, select, update

from meterbill.auth.models import User
from meterbill.billing.gateway import StripeGateway
from meterbill.billing.models import BillingEvent, Subscription
from meterbill.billing.stripe_objects import SubscriptionSnapshot, read_subscription
from meterbill.billing.webhooks import apply_stripe_event
from meterbill.config import Catalog, Settings
from meterbill.db import Database
from meterbill.errors import MeterbillError

log = logging.getLogger("meterbill.reconcile")
UNSETTLED = ("past_due", "unpaid", "incomplete")


@dataclass
class ReconcileReport:
    customers: int = 0
    healed: int = 0
    failed: int = 0
    # (user id, Stripe customer id, cause) of each failure, for the operator.
    failures: list[tuple[str, str, str]] = field(default_factory=list)


def stale_customers(
    db: Database, now: datetime, stale_days: int, *, everyone: bool = False
) -> list[tuple[str, str]]:
    """(user id, Stripe customer id) of the customers to compare with Stripe."""
    query = select(User.id, User.stripe_customer_id).where(User.stripe_customer_id.is_not(None))
    if not everyone:
        cutoff = now - timedelta(days=stale_days)
        unsettled = exists().where(
            Subscription.user_id == User.id, Subscription.status.in_(UNSETTLED)
        )
        recent_event = exists().where(
            BillingEvent.user_id == User.id, BillingEvent.received_at >= cutoff
        )
        quiet = (
            or_(User.reconciled_at.is_(None), User.reconciled_at < cutoff)
            & (User.created_at < cutoff)
            & ~recent_event
        )
        query = query.where(or_(unsettled, quiet))
    with db.reading() as session:
        return [(row[0], str(row[1])) for row in session.execute(query.order_by(User.id))]


def _differs(row: Subscription | None, snapshot: SubscriptionSnapshot) -> bool:
    status = snapshot.status
    if row is None:
        return status not in ("canceled", "incomplete_expired")
    if row.status == "canceled":
        return False  # never resurrected; Stripe makes a new subscription instead
    period_end = snapshot.current_period_end
    return (
        row.status != status
        or row.stripe_price_id != snapshot.price_id
        or (period_end is not None and row.current_period_end != period_end)
    )


def reconcile_customer(
    db: Database,
    settings: Settings,
    catalog: Catalog,
    gateway: StripeGateway,
    user_id: str,
    customer_id: str,
    now: datetime,
) -> int:
    """Compare one customer's subscriptions with Stripe's; returns how many were healed."""
    healed = 0
    for obj in gateway.list_subscriptions(customer_id):
        snapshot = read_subscription(obj)
        if snapshot is None:
            continue
        with db.reading() as session:
            row = session.scalars(
                select(Subscription).where(Subscription.stripe_subscription_id == snapshot.id)
            ).one_or_none()
            if not _differs(row, snapshot):
                continue
        outcome = apply_stripe_event(
            db, settings, catalog, gateway, synthetic_event(obj, snapshot, now), now
        )
        log.info(
            "subscription reconciled with Stripe",
            extra={"user_id": user_id, "subscription": snapshot.id, "outcome": outcome},
        )
        healed += outcome == "applied"
    with db.transaction() as session:
        session.execute(update(User).where(User.id == user_id).values(reconciled_at=now))
    return healed


def synthetic_event(
    obj: dict[str, Any], snapshot: SubscriptionSnapshot, now: datetime
) -> dict[str, Any]:
    """A Stripe-shaped event that says "the subscription is as Stripe shows it `now`"."""
    stamp = int(now.timestamp())
    kind = "deleted" if snapshot.status == "canceled" else "updated"
    return {
        "id": f"evt_meterbill_reconcile_{snapshot.id}_{stamp}",
        "object": "event",
        "type": f"customer.subscription.{kind}",
        "created": stamp,
        "data": {"object": obj},
        "meterbill_synthetic": "reconcile",
    }


def reconcile(
    db: Database,
    settings: Settings,
    catalog: Catalog,
    gateway: StripeGateway,
    now: datetime,
    *,
    everyone: bool = False,
    customers: list[tuple[str, str]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReconcileReport:
    """Reconcile the stale customers (or `everyone`, or the `customers` given)."""
    targets = (
        customers
        if customers is not None
        else stale_customers(db, now, settings.reconcile_stale_days, everyone=everyone)
    )
    report = ReconcileReport(customers=len(targets))
    for user_id, customer_id in targets:
        try:
            report.healed += reconcile_customer(
                db, settings, catalog, gateway, user_id, customer_id, now
            )
        except MeterbillError as exc:
            report.failed += 1
            report.failures.append((user_id, customer_id, exc.message_en))
            log.warning(
                "reconciliation failed for a customer",
                extra={"user_id": user_id, "customer": customer_id, "error": exc.code},
            )
        if progress:
            progress(1)
    return report
