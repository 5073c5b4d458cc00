"""A subscription's state, derived from every Stripe event received about it.

Stripe delivers events late, twice and out of order. Rather than patching a row with each
event as it lands (which lets an old `updated` resurrect a canceled subscription), the row
is recomputed from all the events recorded for that subscription, sorted by the time
Stripe created them. Whatever order they arrive in, the result is the state that in-order,
single delivery would have produced.

Stripe's statuses and what they grant (the README has the same table):

| status               | plan granted                     |
|----------------------|----------------------------------|
| `trialing`, `active` | the plan of the price            |
| `past_due`           | the plan, until the grace ends   |
| `incomplete`, `incomplete_expired`, `unpaid`, `paused`, `canceled` | free |

Only a snapshot of the subscription (an event carrying it, or Stripe's answer) moves it
out of `incomplete`, `unpaid` or `paused`; a payment failure makes a paying subscription
past due, the grace period running `grace` from the failure event's `created` time (a
retry does not extend it); a payment makes a past-due or unpaid one active. `canceled`
and `incomplete_expired` are final. Snapshots sharing one `created` second are ordered
by Stripe's answer (see billing.dispatch).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from meterbill.auth.models import User
from meterbill.billing.models import BillingEvent, Subscription
from meterbill.billing.stripe_objects import (
    SubscriptionSnapshot,
    _timestamp,
    invoice_period_end,
    read_subscription,
)
from meterbill.config import Catalog
from meterbill.notify.service import notify_plan_changed

LIVE_STATUSES = ("active", "trialing", "past_due", "unpaid", "incomplete", "paused")
PAYING_STATUSES = ("active", "trialing")
# Statuses Stripe bills or may still bill (an `incomplete` one starts once paid): a user
# keeps one such subscription, and billing.duplicates cancels the others. A `paused` one
# is left alone: Stripe bills nothing until the user resumes it (checkout refuses a new
# subscription meanwhile).
BILLABLE_STATUSES = (*PAYING_STATUSES, "past_due", "unpaid", "incomplete")


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join("'" + value.replace("'", "''") + "'" for value in values)


def plan_of_user_sql(user: str, now: str) -> str:
    """`effective_plan(current_subscription(...))` as a scalar SQL subquery (PostgreSQL):
    the plan of `user`'s deciding subscription (`deciding_subscription`, its ranks and
    directions written as the ORDER BY) while it is paid for (or past due within its grace
    period), else free; NULL when the user has no subscription. `user` and `now` are SQL
    expressions (a column, a placeholder), never values. One index range read on (user_id,
    start_date), the user's few rows sorted; tests/usage/test_consume_statement.py holds
    it to the Python rule."""
    billable = f"s.status IN ({_quoted(BILLABLE_STATUSES)})"
    return f"""
    SELECT CASE WHEN s.status IN ({_quoted(PAYING_STATUSES)})
                  OR (s.status = 'past_due' AND s.grace_period_end > {now})
           THEN s.plan ELSE 'free' END AS name
    FROM saas_subscriptions s WHERE s.user_id = {user}
    ORDER BY CASE WHEN s.status IN ({_quoted(PAYING_STATUSES)}) THEN 0
                  WHEN {billable} THEN 1
                  WHEN s.status IN ({_quoted(LIVE_STATUSES)}) THEN 2
                  ELSE 3 END,
             CASE WHEN {billable} THEN s.start_date END,
             CASE WHEN {billable} THEN s.id END,
             s.start_date DESC, s.id DESC
    LIMIT 1"""  # noqa: S608


FINAL_STATUSES = ("canceled", "incomplete_expired")
# A failed payment makes these past due; the others stay as they are (an incomplete
# subscription stays incomplete: it was never paid for).
FAILS_TO_PAST_DUE = ("active", "trialing", "past_due")
# A payment makes these active again (Stripe does the same when the invoice is paid).
PAYMENT_REACTIVATES = ("past_due", "unpaid")
SNAPSHOT_EVENTS = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "checkout.session.completed",
)
PAYMENT_FAILED = "invoice.payment_failed"
PAYMENT_SUCCEEDED = ("invoice.payment_succeeded", "invoice.paid")

# Events created in the same second are applied in the order Stripe's lifecycle implies.
_SAME_SECOND_ORDER = {
    "customer.subscription.created": 0,
    "checkout.session.completed": 1,
    "invoice.payment_failed": 2,
    "invoice.payment_succeeded": 3,
    "invoice.paid": 3,
    "customer.subscription.updated": 4,
    "customer.subscription.deleted": 5,
}


def effective_plan(subscription: Subscription | None, now: datetime) -> str:
    """The plan whose limits apply now: a past-due subscription keeps its plan until the
    grace period ends, then counts as free; anything not paid for counts as free."""
    if subscription is None:
        return "free"
    if subscription.status in PAYING_STATUSES:
        return subscription.plan
    if subscription.status == "past_due" and subscription.grace_period_end is not None:
        return subscription.plan if now < subscription.grace_period_end else "free"
    return "free"


def deciding_subscription(rows: Iterable[Subscription]) -> Subscription | None:
    """The subscription whose plan is the user's, among `rows` (all of one user's): the one
    billing.duplicates keeps, i.e. the oldest paying one (by start date, then id), else the
    oldest billable one; else the newest paused one; else the newest ended one.

    The one kept is the one that decides, so a second subscription never changes the plan
    on arriving and again on being canceled: the user keeps the plan they pay for and is
    never served the plan of the one that is canceled and refunded."""
    rows = list(rows)
    billable = [row for row in rows if row.status in BILLABLE_STATUSES]
    if billable:
        paying = [row for row in billable if row.status in PAYING_STATUSES]
        return min(paying or billable, key=_started)
    live = [row for row in rows if row.status in LIVE_STATUSES]  # paused ones, here
    return max(live or rows, key=_started, default=None)


def _started(row: Subscription) -> tuple[datetime, int]:
    return row.start_date, row.id


def current_subscription(
    session: Session, user_id: str, loaded: Sequence[Subscription] | None = None
) -> Subscription | None:
    """The user's deciding subscription (`deciding_subscription`), read in one query, or
    found among `loaded` when the caller holds all of the user's rows already."""
    if loaded is None:
        rows: Sequence[Subscription] = session.scalars(
            select(Subscription).where(Subscription.user_id == user_id)
        ).all()
    else:
        rows = [row for row in loaded if row.user_id == user_id]
    return deciding_subscription(rows)


@dataclass(frozen=True)
class State:
    plan: str | None = None
    price_id: str | None = None
    status: str | None = None
    customer_id: str | None = None
    user_id: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    current_period_end: datetime | None = None
    grace_period_end: datetime | None = None
    last_created: int = 0
    cancel_at_period_end: bool = False
    cancel_at: datetime | None = None
    schedule_id: str | None = None


@dataclass(frozen=True)
class Folded:
    state: State
    unknown_prices: tuple[str, ...]


def event_snapshot(event: BillingEvent, body: dict[str, Any]) -> SubscriptionSnapshot | None:
    if event.snapshot:
        return read_subscription(json.loads(event.snapshot))
    if event.event_type.startswith("customer.subscription."):
        return read_subscription(body)
    return None


def fold_events(events: list[BillingEvent], catalog: Catalog, grace: timedelta) -> Folded:
    """The state of one subscription after its events, applied in Stripe's creation order."""
    state = State()
    unknown: list[str] = []
    ordered = sorted(
        events,
        key=lambda e: (
            e.stripe_created,
            e.snapshot_fetched_ms or 0,  # Stripe's answer settles a same-second tie
            _SAME_SECOND_ORDER.get(e.event_type, 9),
            e.stripe_event_id,
        ),
    )
    for event in ordered:
        if state.status in FINAL_STATUSES:
            break  # never comes back; Stripe makes a new subscription instead
        body = json.loads(event.payload or "{}").get("data", {}).get("object", {})
        at = _timestamp(event.stripe_created)
        snapshot = event_snapshot(event, body)
        if snapshot is not None:
            state = _apply_snapshot(state, snapshot, event, catalog, unknown, at, grace)
        elif event.event_type == PAYMENT_FAILED and state.status in FAILS_TO_PAST_DUE:
            # The grace period runs from the failure (the event), not from the invoice,
            # which Stripe drafts before charging and a debit can fail days after.
            state = _enter_status(state, "past_due", at, grace)
        elif event.event_type in PAYMENT_SUCCEEDED and state.status is not None:
            if state.status in PAYMENT_REACTIVATES:
                state = _enter_status(state, "active", at, grace)
            period_end = invoice_period_end(body)
            if period_end and (
                state.current_period_end is None or period_end > state.current_period_end
            ):
                state = replace(state, current_period_end=period_end)
        state = replace(state, last_created=max(state.last_created, event.stripe_created))
    return Folded(state, tuple(unknown))


def _apply_snapshot(
    state: State,
    snapshot: SubscriptionSnapshot,
    event: BillingEvent,
    catalog: Catalog,
    unknown: list[str],
    at: datetime | None,
    grace: timedelta,
) -> State:
    plan = catalog.plan_for_price(snapshot.price_id)
    if plan is None and snapshot.price_id:
        unknown.append(snapshot.price_id)
    status = "canceled" if event.event_type.endswith(".deleted") else snapshot.status
    state = replace(
        state,
        plan=plan.name if plan else "free",
        price_id=snapshot.price_id,
        customer_id=snapshot.customer_id or state.customer_id,
        user_id=snapshot.user_id or state.user_id,
        started_at=state.started_at or snapshot.started_at or at,
        current_period_end=snapshot.current_period_end or state.current_period_end,
        cancel_at_period_end=snapshot.cancel_at_period_end,
        cancel_at=snapshot.cancel_at,
        schedule_id=snapshot.schedule_id,
    )
    state = _enter_status(state, status, at, grace)
    if status == "canceled":
        state = replace(state, ended_at=snapshot.ended_at or at)
    return state


def _enter_status(state: State, status: str, at: datetime | None, grace: timedelta) -> State:
    """Move to `status`; a grace period starts when the subscription becomes past due and
    ends (is cleared) when it leaves that status."""
    grace_end = state.grace_period_end
    if status == "past_due" and state.status != "past_due":
        grace_end = (at + grace) if at else None
    elif status != "past_due":
        grace_end = None
    return replace(state, status=status, grace_period_end=grace_end)


def refresh_subscription(
    session: Session,
    subscription_id: str,
    user_id: str,
    catalog: Catalog,
    grace: timedelta,
    now: datetime,
    loaded: list[Subscription] | None = None,
) -> tuple[Subscription | None, tuple[str, ...]]:
    """Recompute the row of one subscription from all its recorded events.

    With `loaded` (a list), the user's subscription rows are read with it in one query
    and left there, a new row included, for `sync_user_plan`."""
    events = list(
        session.scalars(
            select(BillingEvent).where(BillingEvent.stripe_subscription_id == subscription_id)
        )
    )
    folded = fold_events(events, catalog, grace)
    state = folded.state
    mine = Subscription.stripe_subscription_id == subscription_id
    if loaded is not None:
        loaded[:] = session.scalars(
            select(Subscription).where(or_(mine, Subscription.user_id == user_id))
        ).all()
    if state.status is None or state.plan is None:
        return None, folded.unknown_prices  # nothing describes the subscription itself yet
    if loaded is None:
        row = session.scalars(select(Subscription).where(mine)).one_or_none()
    else:
        row = next((r for r in loaded if r.stripe_subscription_id == subscription_id), None)
    if row is None:
        row = Subscription(stripe_subscription_id=subscription_id, user_id=user_id)
        session.add(row)
        if loaded is not None:
            loaded.append(row)
    row.plan = state.plan
    row.status = state.status
    row.stripe_price_id = state.price_id
    row.stripe_customer_id = state.customer_id
    row.start_date = state.started_at or row.start_date or _timestamp(state.last_created) or now
    row.end_date = state.ended_at
    row.current_period_end = state.current_period_end
    row.grace_period_end = state.grace_period_end
    row.state_event_created = state.last_created
    row.cancel_at_period_end = state.cancel_at_period_end
    row.cancel_at = state.cancel_at
    row.stripe_schedule_id = state.schedule_id
    session.flush()
    return row, folded.unknown_prices


def sync_user_plan(
    session: Session, user: User, now: datetime, loaded: Sequence[Subscription] | None = None
) -> str:
    """Write the user's effective plan on `saas_users.plan` (informational; reads recompute)."""
    plan = effective_plan(current_subscription(session, user.id, loaded), now)
    if user.plan != plan:
        # The SaaS's backend hears of it from the same transaction (outgoing webhook).
        notify_plan_changed(session, user.id, user.plan, plan, now)
        user.plan = plan
    return plan
