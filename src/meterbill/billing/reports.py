"""Read-only views of subscriptions and Stripe events for the operator console: each one
query on an index, bounded, so the console costs the same at any number of users."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from meterbill.auth.models import User
from meterbill.billing.models import BillingEvent, Subscription
from meterbill.billing.subscriptions import LIVE_STATUSES
from meterbill.db import page_of

FAILED_OUTCOMES = ("unresolved", "rejected")


def subscriptions_by_plan(session: Session) -> dict[str, int]:
    """How many live subscriptions each plan has."""
    rows = session.execute(
        select(Subscription.plan, func.count())
        .where(Subscription.status.in_(LIVE_STATUSES))
        .group_by(Subscription.plan)
        .order_by(Subscription.plan)
    ).all()
    return {str(plan): int(count) for plan, count in rows}


@dataclass(frozen=True)
class InGrace:
    user_id: str
    email: str | None
    plan: str
    grace_period_end: datetime


def users_in_grace(session: Session, now: datetime, limit: int = 20) -> tuple[list[InGrace], int]:
    """Past-due subscriptions whose grace period has not ended, soonest end first; and how
    many there are."""
    where = (Subscription.status == "past_due", Subscription.grace_period_end > now)
    rows = session.execute(
        select(Subscription.user_id, User.email, Subscription.plan, Subscription.grace_period_end)
        .join(User, User.id == Subscription.user_id)
        .where(*where)
        .order_by(Subscription.grace_period_end)
        .limit(limit)
    ).all()
    total = session.scalar(select(func.count()).select_from(Subscription).where(*where))
    found = [
        InGrace(user_id, email, plan, end)
        for user_id, email, plan, end in rows
        if end is not None  # always true here: the query asks for a grace end
    ]
    return found, int(total or 0)


def churned_between(session: Session, start: datetime, end: datetime) -> int:
    """Subscriptions that ended (canceled) in [start, end)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Subscription)
            .where(
                Subscription.end_date >= start,
                Subscription.end_date < end,
                Subscription.status == "canceled",
            )
        )
        or 0
    )


def count_failed_events(session: Session) -> int:
    """Stripe events recorded but not applied (no user found, price not in the catalog)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(BillingEvent)
            .where(BillingEvent.outcome.in_(FAILED_OUTCOMES))
        )
        or 0
    )


def list_events(
    session: Session,
    *,
    outcome: str | None = None,
    user_id: str | None = None,
    page: int = 1,
    per_page: int = 50,
) -> tuple[list[BillingEvent], bool]:
    """Stripe events newest first (by arrival), filtered; and whether more follow."""
    query = select(BillingEvent)
    if outcome == "failed":
        query = query.where(BillingEvent.outcome.in_(FAILED_OUTCOMES))
    elif outcome:
        query = query.where(BillingEvent.outcome == outcome)
    if user_id is not None:
        query = query.where(BillingEvent.user_id == user_id)
    return page_of(session, query.order_by(BillingEvent.id.desc()), page, per_page)


def subscription_history(session: Session, user_id: str, limit: int = 50) -> list[Subscription]:
    """The user's subscriptions, newest first."""
    return list(
        session.scalars(
            select(Subscription)
            .where(Subscription.user_id == user_id)
            .order_by(Subscription.start_date.desc(), Subscription.id.desc())
            .limit(limit)
        )
    )
