"""Changing plans through the subscription a user already pays for.

A paying user never gets a second subscription: an upgrade changes the price of the
subscription's item now, with the prorated difference invoiced and paid at once (Stripe's
`proration_behavior=always_invoice`, `payment_behavior=pending_if_incomplete`, so Stripe
applies the change only once that invoice is paid); a downgrade is a subscription schedule
whose next phase, at the period's end, carries the cheaper price; a cancellation is
`cancel_at_period_end`. Stripe is called before any database transaction (SQLite has one
writer), with an idempotency key derived from the state the request started from, so a
retried request gets Stripe's first answer instead of a second charge. Only what Stripe
answers is recorded, as a snapshot the fold of billing.subscriptions reads like an event.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from meterbill.auth.service import lock_user
from meterbill.billing.gateway import StripeAnswer, StripeGateway
from meterbill.billing.models import BillingEvent, Subscription
from meterbill.billing.stripe_objects import _timestamp
from meterbill.billing.subscriptions import (
    deciding_subscription,
    effective_plan,
    refresh_subscription,
    sync_user_plan,
)
from meterbill.config import Catalog, Settings
from meterbill.db import Database
from meterbill.errors import (
    AlreadyOnPlan,
    InvalidPlan,
    NoPaidSubscription,
    PlanChangePaymentFailed,
    PlanChangeRequired,
    PriceNotConfigured,
    SettlementRequired,
    StripeNotConfigured,
)

# Subscriptions Stripe still bills: a user with one of these must not get another.
BILLED_STATUSES = ("active", "trialing", "past_due", "unpaid")
_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}


@dataclass(frozen=True)
class Billed:
    """The user's subscription that Stripe still bills and that decides their plan (the one
    billing.duplicates keeps, should there be two), and how many events meterbill holds
    about it (a marker of the state a request starts from, for idempotency keys)."""

    row: Subscription
    marker: int


def billed_subscription(session: Session, user_id: str) -> Billed | None:
    # Changed or canceled, it must be the one kept: a change made to a duplicate is refunded
    # with it, and canceling it would leave the kept one billing.
    row = deciding_subscription(
        session.scalars(
            select(Subscription).where(
                Subscription.user_id == user_id, Subscription.status.in_(BILLED_STATUSES)
            )
        )
    )
    if row is None:
        return None
    marker = session.scalar(
        select(func.count(BillingEvent.id)).where(
            BillingEvent.stripe_subscription_id == row.stripe_subscription_id
        )
    )
    return Billed(row, int(marker or 0))


def refuse_second_subscription(billed: Billed | None, plan: str, now: datetime) -> None:
    """Checkout sells a first subscription only: the plan in effect is a 400 (the seed's),
    another plan while one is paid for goes through the plan endpoint (409), and a
    subscription whose grace period is over must be settled or canceled first (409)."""
    if billed is None:
        return
    row = billed.row
    in_effect = effective_plan(row, now)
    if in_effect != "free":
        if in_effect == plan:
            raise AlreadyOnPlan(plan)
        raise PlanChangeRequired()
    if row.status in ("active", "trialing"):
        raise PlanChangeRequired()  # billed at a price outside the catalog: change its price
    raise SettlementRequired()


def _target_price(catalog: Catalog, plan: str) -> tuple[str, str]:
    plan = plan.strip().lower()
    if plan == "free" or plan not in catalog.plans:
        raise InvalidPlan()
    price = catalog.plan(plan).stripe_price
    if not price:
        raise PriceNotConfigured(plan)
    return plan, price


def _changeable(db: Database, gateway: StripeGateway, user_id: str, now: datetime) -> Billed:
    if not gateway.configured:
        raise StripeNotConfigured()
    with db.reading() as session:
        billed = billed_subscription(session, user_id)
    if billed is None:
        raise NoPaidSubscription()
    if effective_plan(billed.row, now) == "free" and billed.row.status not in (
        "active",
        "trialing",
    ):
        raise SettlementRequired()
    return billed


def _item(subscription: dict[str, Any]) -> dict[str, Any]:
    data = (subscription.get("items") or {}).get("data") or []
    return data[0] if data and isinstance(data[0], dict) else {}


def _price_of(item: dict[str, Any]) -> dict[str, Any]:
    price = item.get("price") or item.get("plan")
    return price if isinstance(price, dict) else {}


def _daily_amount(price: dict[str, Any]) -> float:
    """What a price costs per day, to tell an upgrade from a downgrade across intervals."""
    amount = price.get("unit_amount", price.get("amount")) or 0
    recurring = price.get("recurring") or {}
    interval = recurring.get("interval") or price.get("interval") or "month"
    count = recurring.get("interval_count") or price.get("interval_count") or 1
    return float(amount) / (_DAYS.get(str(interval), 30) * int(count))


def _id_of(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


# -- recording what Stripe answered ---------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    plan: str | None
    at: datetime | None
    schedule_id: str | None


def record_answer(
    db: Database,
    catalog: Catalog,
    settings: Settings,
    user_id: str,
    answer: StripeAnswer,
    now: datetime,
    pending: Pending | None = None,
) -> None:
    """Fold Stripe's answer about a subscription into its row, like an event Stripe sent at
    the time of its answer; `pending` records the downgrade meterbill scheduled."""
    subscription = answer.object
    subscription_id = str(subscription["id"])
    # Not a Stripe event id ("evt_…"): this row is Stripe's answer to meterbill's request.
    event_id = f"answer:{time.time_ns():020d}:{subscription_id}"
    payload = {
        "id": event_id,
        "object": "event",
        "type": "customer.subscription.updated",
        "created": answer.at,
        "data": {"object": subscription},
    }
    with db.transaction() as session:
        user = lock_user(session, user_id)
        session.add(
            BillingEvent(
                stripe_event_id=event_id,
                event_type="customer.subscription.updated",
                user_id=user_id,
                payload=json.dumps(payload, separators=(",", ":"), default=str),
                stripe_subscription_id=subscription_id,
                stripe_created=answer.at,
                # Stripe's answer, like a snapshot fetched for a same-second tie (the fold
                # orders the snapshots of one second by when Stripe gave them).
                snapshot_fetched_ms=time.time_ns() // 1_000_000,
                outcome="applied",
                received_at=now,
            )
        )
        session.flush()
        row, _ = refresh_subscription(
            session,
            subscription_id,
            user_id,
            catalog,
            timedelta(days=settings.grace_days),
            now,
        )
        if row is not None and pending is not None:
            row.pending_plan = pending.plan
            row.pending_plan_at = pending.at
            row.pending_schedule_id = pending.schedule_id
        sync_user_plan(session, user, now)


# -- the operations ------------------------------------------------------------------------


def change_plan(
    db: Database,
    settings: Settings,
    catalog: Catalog,
    gateway: StripeGateway,
    user_id: str,
    plan: str,
    now: datetime,
) -> None:
    """Move the user's paid subscription to `plan`: now if it costs more (prorated, applied
    once paid), at the period's end if it costs less; asking for the plan in effect while
    a downgrade is pending takes the downgrade back."""
    plan, price_id = _target_price(catalog, plan)
    billed = _changeable(db, gateway, user_id, now)
    subscription_id = billed.row.stripe_subscription_id
    current = gateway.fetch_subscription(subscription_id)
    item = _item(current.object)
    current_price = _price_of(item)
    schedule_id = _id_of(current.object.get("schedule"))
    if current_price.get("id") == price_id:
        if schedule_id:  # a downgrade is scheduled: keep the plan in effect instead
            gateway.release_schedule(schedule_id)
            answer = gateway.fetch_subscription(subscription_id)
            record_answer(db, catalog, settings, user_id, answer, now, Pending(None, None, None))
            return
        if billed.row.plan != plan:  # meterbill had not heard of it yet
            record_answer(db, catalog, settings, user_id, current, now)
            return
        raise AlreadyOnPlan(plan)
    if current.object.get("pending_update"):
        raise PlanChangePaymentFailed()  # an earlier change waits for its invoice's payment
    target = gateway.retrieve_price(price_id)
    if _daily_amount(target) >= _daily_amount(current_price):
        _upgrade(db, settings, catalog, gateway, user_id, billed, current, price_id, now)
    else:
        _schedule_downgrade(
            db, settings, catalog, gateway, user_id, billed, current, plan, target, now
        )


def _upgrade(
    db: Database,
    settings: Settings,
    catalog: Catalog,
    gateway: StripeGateway,
    user_id: str,
    billed: Billed,
    current: StripeAnswer,
    price_id: str,
    now: datetime,
) -> None:
    subscription_id = str(current.object["id"])
    schedule_id = _id_of(current.object.get("schedule"))
    if schedule_id:
        gateway.release_schedule(schedule_id)  # a pending downgrade gives way to the upgrade
    item = _item(current.object)
    latest_invoice = _id_of(current.object.get("latest_invoice")) or "none"
    key = (
        f"meterbill-plan-{subscription_id}-{item.get('id')}-{_price_of(item).get('id')}"
        f"-{price_id}-{latest_invoice}-{billed.marker}"
    )
    answer = gateway.update_subscription(
        subscription_id,
        {
            "items": [{"id": item.get("id"), "price": price_id}],
            "proration_behavior": "always_invoice",
            "payment_behavior": "pending_if_incomplete",
        },
        key,
    )
    record_answer(db, catalog, settings, user_id, answer, now, Pending(None, None, None))
    if answer.object.get("pending_update"):
        raise PlanChangePaymentFailed()


def _schedule_downgrade(
    db: Database,
    settings: Settings,
    catalog: Catalog,
    gateway: StripeGateway,
    user_id: str,
    billed: Billed,
    current: StripeAnswer,
    plan: str,
    target: dict[str, Any],
    now: datetime,
) -> None:
    """A schedule keeps the current price until the period's end, then the cheaper one;
    it then releases the subscription, which goes on at the cheaper price."""
    subscription_id = str(current.object["id"])
    schedule_id = _id_of(current.object.get("schedule"))
    if schedule_id:
        schedule = gateway.retrieve_schedule(schedule_id)
    else:
        key = f"meterbill-schedule-{subscription_id}-{billed.marker}"
        schedule = gateway.create_schedule(subscription_id, key)
        if schedule.get("status") not in ("active", "not_started"):
            # A replay of a schedule released since: this is a new request.
            schedule = gateway.create_schedule(subscription_id, f"{key}-after-{schedule['id']}")
    phases = schedule.get("phases") or []
    first = phases[0] if phases and isinstance(phases[0], dict) else {}
    item = _item(current.object)
    quantity = int(item.get("quantity") or 1)
    recurring = target.get("recurring") or {}
    schedule = gateway.update_schedule(
        str(schedule["id"]),
        {
            "end_behavior": "release",
            "phases": [
                {
                    "items": [{"price": _price_of(item).get("id"), "quantity": quantity}],
                    "start_date": first.get("start_date"),
                    "end_date": first.get("end_date"),
                },
                {
                    "items": [{"price": target["id"], "quantity": quantity}],
                    "proration_behavior": "none",
                    "duration": {
                        "interval": recurring.get("interval") or "month",
                        "interval_count": int(recurring.get("interval_count") or 1),
                    },
                },
            ],
        },
        f"meterbill-downgrade-{schedule['id']}-{target['id']}-{billed.marker}",
    )
    phases = schedule.get("phases") or []
    starts = _timestamp(phases[1].get("start_date")) if len(phases) > 1 else None
    answer = gateway.fetch_subscription(subscription_id)
    record_answer(
        db, catalog, settings, user_id, answer, now, Pending(plan, starts, str(schedule["id"]))
    )


def cancel_at_period_end(
    db: Database,
    settings: Settings,
    catalog: Catalog,
    gateway: StripeGateway,
    user_id: str,
    now: datetime,
) -> None:
    """Stop the subscription at the period's end (the user keeps the plan until then). A
    subscription whose grace period is over, which the user no longer gets, stops now."""
    if not gateway.configured:
        raise StripeNotConfigured()
    with db.reading() as session:
        billed = billed_subscription(session, user_id)
    if billed is None:
        raise NoPaidSubscription()
    subscription_id = billed.row.stripe_subscription_id
    if effective_plan(billed.row, now) == "free" and billed.row.status not in (
        "active",
        "trialing",
    ):
        answer = gateway.cancel_subscription_now(
            subscription_id, f"meterbill-cancel-now-{subscription_id}"
        )
        record_answer(db, catalog, settings, user_id, answer, now)
        return
    current = gateway.fetch_subscription(subscription_id)
    if current.object.get("cancel_at_period_end") is True:
        record_answer(db, catalog, settings, user_id, current, now)
        return
    schedule_id = _id_of(current.object.get("schedule"))
    if schedule_id:
        # Stripe refuses to set a cancellation on a scheduled subscription; the pending
        # downgrade no longer matters once the subscription ends.
        gateway.release_schedule(schedule_id)
    answer = gateway.update_subscription(
        subscription_id,
        {"cancel_at_period_end": True},
        f"meterbill-cancel-{subscription_id}-{billed.marker}",
    )
    record_answer(db, catalog, settings, user_id, answer, now, Pending(None, None, None))


def undo_cancel(
    db: Database,
    settings: Settings,
    catalog: Catalog,
    gateway: StripeGateway,
    user_id: str,
    now: datetime,
) -> None:
    """Keep the subscription after all (before the period's end, when it still exists)."""
    billed = _changeable(db, gateway, user_id, now)
    subscription_id = billed.row.stripe_subscription_id
    current = gateway.fetch_subscription(subscription_id)
    if current.object.get("cancel_at_period_end") is not True:
        record_answer(db, catalog, settings, user_id, current, now)
        return
    answer = gateway.update_subscription(
        subscription_id,
        {"cancel_at_period_end": False},
        f"meterbill-uncancel-{subscription_id}-{billed.marker}",
    )
    record_answer(db, catalog, settings, user_id, answer, now)
