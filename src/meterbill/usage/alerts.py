"""Quota alerts: the first time a user crosses the plan's alert ratio (soft) and 100 %
(hard) of a metric in a month, one row is written to `usage_alerts`, in the transaction that
records the events. Crossings are read from the monthly totals the recording statement
returns: those are updated under the row's lock, so of two concurrent batches the later
sees the earlier's total and exactly one of them sees the threshold crossed. The row's
unique key (inserted with `ON CONFLICT DO NOTHING`) makes a second alert impossible anyway.
Each new alert is handed to notifications in the same transaction (`notify_quota_alert`:
an email job and a `quota.alert` webhook, each deduplicated by its cause)."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from meterbill.config import Catalog, Meter, Plan
from meterbill.db import insert_for
from meterbill.notify.service import notify_quota_alert
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


def crossings(
    user_id: str, plan: Plan, metric: str, month: str, before: int, after: int
) -> list[Crossing]:
    """The alert levels a change from `before` to `after` crossed."""
    return [
        Crossing(user_id, metric, month, level, after, limit, percent)
        for level, threshold, limit, percent in thresholds(plan, metric)
        if before < threshold <= after
    ]


def change_figures(meter: Meter | None, change: MonthChange) -> tuple[int, int]:
    """A monthly figure before and after a batch, as the meter aggregates it."""
    aggregation = meter.aggregation if meter else "sum"
    if aggregation == "count":
        return change.events - change.added_events, change.events
    if aggregation == "max":
        # The batch moved the peak only if it holds it; the old peak is then unknown, so
        # every threshold below it counts as crossed (the unique key absorbs repeats).
        return (0 if change.added_peak >= change.peak else change.peak), change.peak
    return change.total - change.added_total, change.total


def alerts_for(
    session: Session, catalog: Catalog, changes: Sequence[MonthChange], now: datetime
) -> list[Crossing]:
    """The alert levels these monthly changes crossed on each user's effective plan.

    Plans are looked up only for changes that cross a threshold of some plan, so a batch
    far from every limit costs no query."""
    # Every plan's thresholds per metric, sorted: one bisection per change instead of a
    # loop over plans (a batch of 1,000 events moves hundreds of monthly totals).
    every: dict[str, list[float]] = {}
    candidates = []
    for change in changes:
        levels = every.get(change.metric)
        if levels is None:
            levels = every[change.metric] = sorted(
                threshold
                for plan in catalog.plans.values()
                for _, threshold, _, _ in thresholds(plan, change.metric)
            )
        before, after = change_figures(catalog.meters.get(change.metric), change)
        above = bisect_right(levels, before)  # the first threshold above `before`
        if above < len(levels) and levels[above] <= after:
            candidates.append((change, before, after))
    if not candidates:
        return []
    plans = plans_of(session, catalog, {c.user_id for c, _, _ in candidates}, now)
    return [
        crossing
        for change, before, after in candidates
        for crossing in crossings(
            change.user_id, plans[change.user_id], change.metric, change.month, before, after
        )
    ]


def record_alerts(session: Session, found: Sequence[Crossing], now: datetime) -> int:
    """Insert the alerts not recorded yet and hand each new one to notifications (an email
    and a `quota.alert` webhook, enqueued in this transaction); returns how many were new."""
    if not found:
        return 0
    insert = insert_for(session)
    ordered = sorted(found, key=lambda c: (c.user_id, c.metric, c.month, c.level))
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
    inserted = session.execute(
        insert(UsageAlert)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["user_id", "metric", "month", "level"])
        .returning(UsageAlert.user_id, UsageAlert.metric, UsageAlert.month, UsageAlert.level)
    ).all()
    new = {tuple(row) for row in inserted}
    for c in ordered:
        if (c.user_id, c.metric, c.month, c.level) in new:
            notify_quota_alert(
                session, c.user_id, c.metric, c.percent, c.month, usage=c.used, limit=c.limit
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
