"""Quota alerts: the first time a user's monthly figure is at or past the alert ratio
(soft) or 100 % (hard) of the limit of the plan in effect, one row is written to
`usage_alerts`, in the transaction that records the event. An alert is once per user,
metric, month, level *and limit*: after an upgrade the new plan's thresholds alert again
when reached, and after a downgrade (or a grace period's end) that leaves the user past
the new limit, the user's next event alerts — even a consume the new plan refuses.

Figures are read from the monthly totals the recording statement returns (updated under
the row's lock), and on PostgreSQL the user's plan in effect too; the row's unique key,
inserted with `ON CONFLICT DO NOTHING`, decides which of two racing batches records the
alert. Each new alert is handed to notifications in the same transaction
(`notify_quota_alert`: an email job and a `quota.alert` webhook, each deduplicated by its
cause).

A user past a threshold stays past it for the rest of the month, so every later batch
finds the same alerts due: each process remembers the alerts it saw recorded (committed)
and skips them, so a batch of users long past their limits writes nothing more than its
events while it holds their monthly rows' locks."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from meterbill.config import Catalog, Meter, Plan
from meterbill.db import Database, insert_for
from meterbill.notify.service import QuotaAlert, notify_quota_alerts
from meterbill.usage.models import UsageAlert
from meterbill.usage.recording import MonthChange
from meterbill.usage.service import plans_of


@dataclass(frozen=True)
class Crossing:
    user_id: str
    metric: str
    month: str
    level: str  # soft | hard
    used: int
    limit: int
    percent: int  # the threshold, in % of the limit: the alert ratio, or 100


def thresholds(plan: Plan, metric: str) -> list[tuple[str, float, int, int]]:
    """(level, threshold, limit, percent) of the plan's alerts on `metric`."""
    limit = plan.limits.get(metric)
    if limit is None or limit <= 0:
        return []
    soft = round(plan.alert_ratio * 100)
    return [("soft", limit * plan.alert_ratio, limit, soft), ("hard", limit, limit, 100)]


def crossings(user_id: str, plan: Plan, metric: str, month: str, figure: int) -> list[Crossing]:
    """The alert levels of `plan` that a monthly figure has reached (each is recorded once
    per limit: `record_alerts` keeps only the ones not recorded yet)."""
    return [
        Crossing(user_id, metric, month, level, figure, limit, percent)
        for level, threshold, limit, percent in thresholds(plan, metric)
        if figure >= threshold
    ]


def month_figure(meter: Meter | None, change: MonthChange) -> int:
    """A monthly figure after a batch, as the meter aggregates it."""
    aggregation = meter.aggregation if meter else "sum"
    if aggregation == "count":
        return change.events
    if aggregation == "max":
        return change.peak
    return change.total


def alerts_for(
    session: Session, catalog: Catalog, changes: Sequence[MonthChange], now: datetime
) -> list[Crossing]:
    """The alert levels these monthly figures have reached on each user's effective plan.

    The plans are the ones the recording statement returned; else (SQLite) they are looked
    up only for figures at or past a threshold of some plan, so a batch far from every
    limit costs no query."""
    lowest: dict[str, float] = {}
    for plan in catalog.plans.values():
        for metric in plan.limits:
            for _, threshold, _, _ in thresholds(plan, metric):
                lowest[metric] = min(lowest.get(metric, threshold), threshold)
    candidates = []
    for change in changes:
        figure = month_figure(catalog.meters.get(change.metric), change)
        if change.metric in lowest and figure >= lowest[change.metric]:
            candidates.append((change, figure))
    if not candidates:
        return []
    missing = {c.user_id for c, _ in candidates if c.plan is None}
    plans = plans_of(session, catalog, missing, now) if missing else {}
    plans |= {c.user_id: catalog.plan(c.plan) for c, _ in candidates if c.plan is not None}
    return [
        crossing
        for change, figure in candidates
        for crossing in crossings(
            change.user_id, plans[change.user_id], change.metric, change.month, figure
        )
    ]


AlertKey = tuple[str, str, str, str, int]  # user, metric, month, level, limit


class RecordedAlerts:
    """The alert keys this process saw recorded (committed), so later batches skip them.

    Only committed facts enter it (`remember` is called after the commit), and an alert
    row is never updated away, so a key found here is recorded; a key missing here is
    simply inserted again with `ON CONFLICT DO NOTHING`. Bounded: emptied past `size`."""

    def __init__(self, size: int = 200_000) -> None:
        self._keys: set[AlertKey] = set()
        self._size = size
        self._lock = threading.Lock()

    def unseen(self, found: Sequence[Crossing]) -> list[Crossing]:
        keys = self._keys
        return [c for c in found if _key(c) not in keys]

    def remember(self, found: Iterable[Crossing]) -> None:
        with self._lock:
            if len(self._keys) > self._size:
                self._keys = set()
            self._keys.update(_key(c) for c in found)


_RECORDED: weakref.WeakKeyDictionary[Database, RecordedAlerts] = weakref.WeakKeyDictionary()


def recorded_alerts(db: Database) -> RecordedAlerts:
    """The alerts this process saw recorded in `db`."""
    with _CACHES_LOCK:
        return _RECORDED.setdefault(db, RecordedAlerts())


_CACHES_LOCK = threading.Lock()


def _key(c: Crossing) -> AlertKey:
    return (c.user_id, c.metric, c.month, c.level, c.limit)


def record_alerts(session: Session, found: Sequence[Crossing], now: datetime) -> int:
    """Insert the alerts not recorded yet and hand each new one to notifications (an email
    and a `quota.alert` webhook, enqueued in this transaction); returns how many were new.

    Once the transaction commits, the caller may `recorded_alerts(db).remember(found)`: every alert
    in `found` is then recorded, by this transaction or by one it waited for."""
    if not found:
        return 0
    insert = insert_for(session)
    ordered = sorted(found, key=lambda c: (c.user_id, c.metric, c.month, c.limit, c.percent))
    rows = [
        {
            "user_id": c.user_id,
            "metric": c.metric,
            "month": c.month,
            "level": c.level,
            "used": c.used,
            "limit": c.limit,
            "created_at": now,
            "notified_at": now,
        }
        for c in ordered
    ]
    # One cached statement run over the rows (executemany, batched by SQLAlchemy), not a
    # multi-row VALUES compiled afresh for every batch.
    statement = (
        insert(UsageAlert)
        .on_conflict_do_nothing(index_elements=["user_id", "metric", "month", "level", "limit"])
        .returning(
            UsageAlert.user_id,
            UsageAlert.metric,
            UsageAlert.month,
            UsageAlert.level,
            UsageAlert.limit,
        )
    )
    inserted = session.execute(statement, rows).all()
    new = {tuple(row) for row in inserted}
    notify_quota_alerts(
        session,
        [
            QuotaAlert(c.user_id, c.metric, c.percent, c.month, usage=c.used, limit=c.limit)
            for c in ordered
            if _key(c) in new
        ],
    )
    return len(new)


def pending_alerts(session: Session, limit: int = 100) -> list[UsageAlert]:
    """Alerts not handed to notifications, oldest first (none, unless a row was written
    without `record_alerts`, e.g. by hand: `notified_at` is set when it enqueues them)."""
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
