"""Quota decisions: may this user consume this metric now, and the atomic check-and-record.

A decision reads one monthly total per metric, so it costs the same at ten thousand or ten
million stored events. `consume` holds the user's row lock while it checks
and records, so concurrent consumers of one user are applied one after the other and a
blocking plan is never pushed past its limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.auth.models import User
from meterbill.auth.service import api_key_name, ensure_user, verify_api_key
from meterbill.config import Catalog, Plan
from meterbill.db import Database
from meterbill.usage.alerts import Crossing, crossings, record_alerts
from meterbill.usage.errors import QuotaExceeded, UnknownMetric, UsageTotalOverflow
from meterbill.usage.models import ConsumptionEvent
from meterbill.usage.partitions import month_start
from meterbill.usage.quota_statement import Decision, decide_and_record, read_month
from meterbill.usage.recording import (
    BIGINT_MAX,
    WRITE_GATE,
    UsageEvent,
    month_of,
    record_usage,
)
from meterbill.usage.service import aggregate, month_usage, plans_of

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


def _require_metric(catalog: Catalog, metric: str) -> None:
    if metric not in catalog.meters:
        raise UnknownMetric(metric)


def check_quota(
    session: Session, catalog: Catalog, user_id: str, metric: str, now: datetime
) -> Quota:
    """Where the user stands on `metric` in the current UTC month (nothing is written)."""
    _require_metric(catalog, metric)
    plan = plans_of(session, catalog, [user_id], now)[user_id]
    used = month_usage(session, catalog.meters, user_id, month_of(now)).get(metric, 0)
    return quota_for(user_id, plan, metric, used)


@dataclass(frozen=True)
class Consumed:
    quota: Quota  # after this consumption (or as it stands, when refused)
    duplicate: bool  # the event id had been recorded already; nothing new was counted
    alerts: list[Crossing]
    refused: bool = False  # the plan blocks and the event would go past its limit


def consume(session: Session, catalog: Catalog, event: UsageEvent, now: datetime) -> Consumed:
    """Check the limit of the month the event counts in and record the event, in one step
    in the session's transaction.

    When the event would take a blocking plan past its limit nothing is recorded and the
    answer says `refused` (the alerts the figure has reached are still recorded: after a
    downgrade, a refused consume is how the user hears of the new limit). The user's row is
    locked first (`FOR NO KEY UPDATE`, which bulk ingestion's foreign-key checks do not
    wait for), so consumers of one user queue. Raises UsageTotalOverflow when the total
    would pass BIGINT.
    """
    _require_metric(catalog, event.metric)
    lock = select(User.id).where(User.id == event.user_id).with_for_update(key_share=True)
    if session.execute(lock).first() is None:
        ensure_user(session, event.user_id)
        session.execute(lock).one()
    plan = plans_of(session, catalog, [event.user_id], now)[event.user_id]
    month = month_of(event.timestamp)
    used = month_usage(session, catalog.meters, event.user_id, month).get(event.metric, 0)
    already = session.scalar(
        select(ConsumptionEvent.id).where(
            ConsumptionEvent.user_id == event.user_id,
            ConsumptionEvent.event_id == event.id,
            ConsumptionEvent.month == month_start(event.timestamp),
        )
    )
    if already is not None:
        return Consumed(quota_for(event.user_id, plan, event.metric, used), True, [])
    limit = plan.limits.get(event.metric)
    after = _after(catalog, event, used)
    if after > BIGINT_MAX:
        raise UsageTotalOverflow()
    if limit is not None and plan.on_limit == "block" and after > limit:
        found = crossings(event.user_id, plan, event.metric, month, used)
        record_alerts(session, found, now)
        return Consumed(quota_for(event.user_id, plan, event.metric, used), False, found, True)
    record_usage(session, [event], now, users_exist=True)
    found = crossings(event.user_id, plan, event.metric, month, after)
    record_alerts(session, found, now)
    return Consumed(quota_for(event.user_id, plan, event.metric, after), False, found)


def _after(catalog: Catalog, event: UsageEvent, used: int) -> int:
    aggregation = catalog.meters[event.metric].aggregation
    if aggregation == "count":
        return used + 1
    if aggregation == "max":
        return max(used, event.value)
    return used + event.value


def check_now(
    db: Database, catalog: Catalog, api_key: str, user_id: str, metric: str, now: datetime
) -> Quota:
    """`check_quota` for a server presenting `api_key`, verified on the same connection
    (InvalidApiKey otherwise). On PostgreSQL: two statements, no transaction."""
    if db.sqlite:
        with db.reading() as session:
            verify_api_key(session, api_key, "read")
            return check_quota(session, catalog, user_id, metric, now)
    _require_metric(catalog, metric)
    with db.autocommit() as raw:
        api_key_name(raw, api_key, "read")
        read = read_month(raw, catalog, user_id, month_of(now), now)
    figures = read.totals.get(metric)
    used = aggregate(catalog.meters.get(metric), *figures) if figures else 0
    return quota_for(user_id, read.plan, metric, used)


def consume_now(
    db: Database, catalog: Catalog, api_key: str, event: UsageEvent, now: datetime
) -> Consumed:
    """Check and record the event atomically, for a server presenting `api_key` (verified
    on the same connection); raises QuotaExceeded (once any alert it is due is committed)
    when a blocking plan refuses it.

    On PostgreSQL one statement does it (`quota_statement`), after the key's; on SQLite,
    which has one writer at a time, `consume` runs in a transaction behind the write gate."""
    if db.sqlite:
        with WRITE_GATE, db.transaction() as session:
            verify_api_key(session, api_key, "ingest")
            consumed = consume(session, catalog, event, now)
    else:
        with db.autocommit() as raw:
            api_key_name(raw, api_key, "ingest")
            _require_metric(catalog, event.metric)
            decision = decide_and_record(raw, catalog, event, now)
        consumed = _consumed(db, event, decision, now)
    if consumed.refused:
        quota = consumed.quota
        raise QuotaExceeded(event.metric, quota.used, quota.limit or 0, now)
    return consumed


def _consumed(db: Database, event: UsageEvent, decision: Decision, now: datetime) -> Consumed:
    quota = quota_for(event.user_id, decision.plan, event.metric, decision.figure)
    found: list[Crossing] = []
    if decision.alert_due:  # rare: a threshold of this limit reached, its alert not recorded
        month = month_of(event.timestamp)
        found = crossings(event.user_id, decision.plan, event.metric, month, decision.figure)
        with db.transaction() as session:
            record_alerts(session, found, now)
    refused = not decision.recorded and not decision.duplicate
    return Consumed(quota, decision.duplicate, found, refused)
