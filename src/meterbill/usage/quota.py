"""Quota decisions: may this user consume this metric now, and the atomic check-and-record.

A decision reads the month's totals from the per-day rollups, so it costs the same at ten
thousand or ten million stored events. `consume` holds the user's row lock while it checks
and records, so concurrent consumers of one user are applied one after the other and a
blocking plan is never pushed past its limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.auth.models import User
from meterbill.auth.service import ensure_user
from meterbill.billing.models import Subscription
from meterbill.billing.subscriptions import LIVE_STATUSES, effective_plan
from meterbill.config import Catalog, Plan
from meterbill.errors import QuotaExceeded, UnknownMetric
from meterbill.usage.alerts import Crossing, crossings, record_alerts
from meterbill.usage.models import ConsumptionEvent
from meterbill.usage.recording import UsageEvent, month_of, record_usage
from meterbill.usage.service import monthly_totals, parse_month

SOFT_HEADER = "soft_limit_warning"
HARD_HEADER = "hard_limit_reached"


@dataclass(frozen=True)
class Quota:
    """Where a user stands on one metric this month. `limit` is None when the plan sets no
    limit for the metric; `allowed` is whether one more unit may be consumed now."""

    user_id: str
    metric: str
    plan: str
    used: int
    limit: int | None
    on_limit: str
    allowed: bool
    remaining: int | None
    alert: str | None  # soft_limit_warning | hard_limit_reached | None

    def body(self) -> dict[str, object]:
        return {
            "allowed": self.allowed,
            "used": self.used,
            "limit": self.limit,
            "remaining": self.remaining,
            "alert": self.alert,
            "user_id": self.user_id,
            "metric": self.metric,
            "plan": self.plan,
            "on_limit": self.on_limit,
        }


def quota_for(user_id: str, plan: Plan, metric: str, used: int) -> Quota:
    limit = plan.limits.get(metric)
    alert = None
    if limit is not None and used >= limit:
        alert = HARD_HEADER
    elif limit is not None and used >= limit * plan.alert_ratio:
        alert = SOFT_HEADER
    blocked = limit is not None and plan.on_limit == "block" and used >= limit
    return Quota(
        user_id=user_id,
        metric=metric,
        plan=plan.name,
        used=used,
        limit=limit,
        on_limit=plan.on_limit,
        allowed=not blocked,
        remaining=None if limit is None else max(limit - used, 0),
        alert=alert,
    )


def month_range(now: datetime) -> tuple[date, date]:
    return parse_month(month_of(now.astimezone(UTC)))


def plans_of(
    session: Session, catalog: Catalog, user_ids: Iterable[str], now: datetime
) -> dict[str, Plan]:
    """Each user's effective plan (as `current_subscription` picks it), in one query."""
    ids = sorted(set(user_ids))
    rows = session.scalars(
        select(Subscription)
        .where(Subscription.user_id.in_(ids))
        .order_by(Subscription.start_date.desc(), Subscription.id.desc())
    ).all()
    chosen: dict[str, Subscription] = {}
    for row in rows:
        best = chosen.get(row.user_id)
        if best is None or (row.status in LIVE_STATUSES and best.status not in LIVE_STATUSES):
            chosen[row.user_id] = row
    return {uid: catalog.plan(effective_plan(chosen.get(uid), now)) for uid in ids}


def _require_metric(catalog: Catalog, metric: str) -> None:
    if metric not in catalog.meters:
        raise UnknownMetric(metric)


def check_quota(
    session: Session, catalog: Catalog, user_id: str, metric: str, now: datetime
) -> Quota:
    """Where the user stands on `metric` in the current UTC month (nothing is written)."""
    _require_metric(catalog, metric)
    plan = plans_of(session, catalog, [user_id], now)[user_id]
    start, end = month_range(now)
    used = monthly_totals(session, user_id, start, end, catalog.meters).get(metric, 0)
    return quota_for(user_id, plan, metric, used)


@dataclass(frozen=True)
class Consumed:
    quota: Quota  # after this consumption
    duplicate: bool  # the event id had been recorded already; nothing new was counted
    alerts: list[Crossing]


def consume(session: Session, catalog: Catalog, event: UsageEvent, now: datetime) -> Consumed:
    """Check the limit and record the event in one step, in the session's transaction.

    Raises QuotaExceeded (and records nothing) when the event would take a blocking plan
    past its limit. The user's row is locked first (`FOR NO KEY UPDATE`, which bulk
    ingestion's foreign-key checks do not wait for), so consumers of one user queue.
    """
    _require_metric(catalog, event.metric)
    ensure_user(session, event.user_id)
    session.execute(
        select(User.id).where(User.id == event.user_id).with_for_update(key_share=True)
    ).one()
    plan = plans_of(session, catalog, [event.user_id], now)[event.user_id]
    start, end = month_range(now)
    used = monthly_totals(session, event.user_id, start, end, catalog.meters).get(event.metric, 0)
    already = session.scalar(
        select(ConsumptionEvent.id).where(ConsumptionEvent.event_id == event.id)
    )
    if already is not None:
        return Consumed(quota_for(event.user_id, plan, event.metric, used), True, [])
    after = _after(catalog, event, used)
    limit = plan.limits.get(event.metric)
    if limit is not None and plan.on_limit == "block" and after > limit:
        raise QuotaExceeded(event.metric, used, limit)
    record_usage(session, [event], now)
    found = crossings(event.user_id, plan, event.metric, month_of(now.astimezone(UTC)), after)
    record_alerts(session, found, now)
    return Consumed(quota_for(event.user_id, plan, event.metric, after), False, found)


def _after(catalog: Catalog, event: UsageEvent, used: int) -> int:
    aggregation = catalog.meters[event.metric].aggregation
    if aggregation == "count":
        return used + 1
    if aggregation == "max":
        return max(used, event.value)
    return used + event.value
