"""Pruning Stripe events that no longer decide anything.

A subscription's row is recomputed from every event recorded about it, so the events of a
live subscription are kept. What goes after `METERBILL_EVENT_RETENTION_DAYS`: events about
no subscription (customers, refunds, ignored types), and the events of subscriptions that
ended before the cutoff — except the newest snapshot of each, which keeps a very late event
from bringing the subscription back.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from meterbill.billing.models import BillingEvent, Subscription
from meterbill.billing.subscriptions import SNAPSHOT_EVENTS


def prune_billing_events(session: Session, before: datetime, batch: int = 1000) -> int:
    """Delete the events received before `before` that no fold needs; returns how many."""
    known = select(Subscription.stripe_subscription_id)
    removed = session.execute(
        delete(BillingEvent).where(
            BillingEvent.received_at < before,
            BillingEvent.outcome != "unresolved",  # kept until its customer is linked
            BillingEvent.stripe_subscription_id.is_(None)
            | BillingEvent.stripe_subscription_id.not_in(known),
        )
    ).rowcount  # type: ignore[attr-defined]
    with_history = (
        select(BillingEvent.stripe_subscription_id)
        .group_by(BillingEvent.stripe_subscription_id)
        .having(func.count() > 1)
    )
    ended = session.scalars(
        select(Subscription.stripe_subscription_id)
        .where(
            Subscription.status == "canceled",
            Subscription.end_date < before,
            Subscription.stripe_subscription_id.in_(with_history),
        )
        .limit(batch)
    ).all()
    for subscription_id in ended:
        events = session.execute(
            select(BillingEvent.id, BillingEvent.event_type, BillingEvent.stripe_created)
            .where(BillingEvent.stripe_subscription_id == subscription_id)
            .order_by(BillingEvent.stripe_created, BillingEvent.id)
        ).all()
        snapshots = [e.id for e in events if e.event_type in SNAPSHOT_EVENTS]
        keep = snapshots[-1] if snapshots else None
        doomed = [e.id for e in events if e.id != keep]
        if doomed:
            removed += session.execute(
                delete(BillingEvent).where(
                    BillingEvent.id.in_(doomed), BillingEvent.received_at < before
                )
            ).rowcount  # type: ignore[attr-defined]
    return int(removed)
