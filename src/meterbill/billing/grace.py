"""Ending grace periods: the read-time rule (`effective_plan`) already counts a past-due
subscription as free once its grace period ends; this makes it visible in the database
(`saas_users.plan`) and tells the user and the SaaS's backend, once per grace period."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from meterbill.auth.service import lock_user
from meterbill.billing.models import Subscription
from meterbill.billing.subscriptions import current_subscription, sync_user_plan
from meterbill.db import Database
from meterbill.notify.service import notify_grace_ended

log = logging.getLogger("meterbill.grace")


def _expired(now: datetime) -> tuple[ColumnElement[bool], ...]:
    """Past due, grace period over, and that grace period not acted on yet."""
    return (
        Subscription.status == "past_due",
        Subscription.grace_period_end <= now,
        or_(
            Subscription.grace_expired_for.is_(None),
            Subscription.grace_expired_for != Subscription.grace_period_end,
        ),
    )


def expire_grace_periods(db: Database, now: datetime, batch: int = 500) -> int:
    """Act on every grace period that ended by `now` and was not acted on; returns how many."""
    with db.reading() as session:
        due = session.execute(
            select(Subscription.id, Subscription.user_id)
            .where(*_expired(now))
            .order_by(Subscription.grace_period_end)
            .limit(batch)
        ).all()
    done = 0
    for subscription_id, user_id in due:
        with db.transaction() as session:
            done += _expire_one(session, subscription_id, user_id, now)
    return done


def _expire_one(session: Session, subscription_id: int, user_id: str, now: datetime) -> int:
    user = lock_user(session, user_id)  # the user's billing changes queue behind this lock
    subscription = session.scalars(
        select(Subscription)
        .where(Subscription.id == subscription_id, *_expired(now))
        .execution_options(populate_existing=True)
    ).one_or_none()
    if subscription is None or subscription.grace_period_end is None:
        return 0  # paid, canceled or handled by another worker meanwhile
    subscription.grace_expired_for = subscription.grace_period_end
    current = current_subscription(session, user_id)
    sync_user_plan(session, user, now)
    if current is not None and current.id == subscription.id:
        notify_grace_ended(
            session,
            user_id,
            subscription_id=subscription.stripe_subscription_id,
            plan=subscription.plan,
            grace_period_end=subscription.grace_period_end,
            now=now,
        )
    log.info(
        "grace period ended",
        extra={"user_id": user_id, "subscription": subscription.stripe_subscription_id},
    )
    return 1
