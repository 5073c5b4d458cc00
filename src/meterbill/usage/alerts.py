"""Quota alerts: the first time a user crosses the plan's alert ratio (soft) and 100 %
(hard) of a metric in a month, one row is written to `usage_alerts` — never two, even when
concurrent batches cross at the same moment, because the row's key is unique and it is
inserted with `ON CONFLICT DO NOTHING`. Notifications read `pending_alerts` and mark them
delivered with `mark_alerts_notified`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from meterbill.config import Plan
from meterbill.db import insert_for
from meterbill.usage.models import UsageAlert


@dataclass(frozen=True)
class Crossing:
    user_id: str
    metric: str
    month: str
    level: str  # soft | hard
    used: int
    limit: int


def crossings(user_id: str, plan: Plan, metric: str, month: str, used: int) -> list[Crossing]:
    """The alert levels `used` has reached on the plan's limit for `metric`."""
    limit = plan.limits.get(metric)
    if limit is None or limit <= 0:
        return []
    found = []
    if used >= limit * plan.alert_ratio:
        found.append(Crossing(user_id, metric, month, "soft", used, limit))
    if used >= limit:
        found.append(Crossing(user_id, metric, month, "hard", used, limit))
    return found


def record_alerts(session: Session, found: Sequence[Crossing], now: datetime) -> int:
    """Insert the alerts not recorded yet; returns how many were new."""
    if not found:
        return 0
    insert = insert_for(session)
    rows = [
        {
            "user_id": c.user_id,
            "metric": c.metric,
            "month": c.month,
            "level": c.level,
            "used": c.used,
            "limit": c.limit,
            "created_at": now,
        }
        for c in sorted(found, key=lambda c: (c.user_id, c.metric, c.month, c.level))
    ]
    result = session.execute(
        insert(UsageAlert)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["user_id", "metric", "month", "level"])
        .returning(UsageAlert.id)
    )
    return len(result.all())


def pending_alerts(session: Session, limit: int = 100) -> list[UsageAlert]:
    """Alerts not yet handed to notifications, oldest first."""
    return list(
        session.scalars(
            select(UsageAlert)
            .where(UsageAlert.notified_at.is_(None))
            .order_by(UsageAlert.id)
            .limit(limit)
        )
    )


def mark_alerts_notified(session: Session, alert_ids: Iterable[int], now: datetime) -> None:
    session.execute(
        update(UsageAlert)
        .where(UsageAlert.id.in_(list(alert_ids)), UsageAlert.notified_at.is_(None))
        .values(notified_at=now)
    )
