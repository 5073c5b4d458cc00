"""Rebuilding the daily and monthly totals from the raw events, reporting where they drifted.

Raw events are read in ranges of their primary key (an index range scan per step, so
progress can be reported and memory stays bounded by the number of daily totals, not of
events). While it runs, PostgreSQL writers to `consumption_log` wait (SHARE lock), so the
totals it writes match the events exactly; SQLite's write lock does the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import Date, Select, cast, delete, func, literal_column, select, text
from sqlalchemy.orm import Session

from meterbill.db import insert_for
from meterbill.usage.models import ConsumptionEvent, UsageDaily, UsageMonthly
from meterbill.usage.partitions import raw_horizon

Figures = tuple[int, int, int]  # total, events, peak


@dataclass(frozen=True)
class Drift:
    table: str  # usage_daily | usage_monthly
    user_id: str
    metric: str
    period: str  # the day (YYYY-MM-DD) or month (YYYY-MM)
    stored: Figures | None  # None: no stored total where events exist
    rebuilt: Figures | None  # None: a stored total where no event exists


@dataclass
class RebuildReport:
    events: int = 0
    totals: int = 0
    drift: list[Drift] = field(default_factory=list)
    fixed: bool = False


def event_id_span(session: Session) -> int:
    """How many event ids the rebuild walks through (the progress bar's length)."""
    low, high = session.execute(
        select(func.min(ConsumptionEvent.id), func.max(ConsumptionEvent.id))
    ).one()
    return 0 if low is None else int(high) - int(low) + 1


def rebuild_totals(
    session: Session,
    *,
    fix: bool = True,
    step: int = 500_000,
    progress: Callable[[int], None] | None = None,
) -> RebuildReport:
    """Recompute every daily and monthly total from `consumption_log`, compare them with
    the stored ones, and (when `fix`) rewrite those that differ. `progress(n)` is told the
    size of each range of event ids done."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE consumption_log IN SHARE MODE"))
    report = RebuildReport()
    days = _rebuilt_days(session, step, progress, report)
    months: dict[tuple[str, str, str], list[int]] = {}
    for (user, metric, day), (total, events, peak) in days.items():
        row = months.setdefault((user, metric, day[:7]), [0, 0, 0])
        row[0] += total
        row[1] += events
        row[2] = max(row[2], peak)
    report.totals = len(days)
    # Totals of periods whose raw events retention dropped stay as they are.
    horizon = raw_horizon(session.connection())
    since = horizon.isoformat() if horizon else ""
    stored_days = {
        (u, m, d.isoformat()): (int(t), int(e), int(p))
        for u, m, d, t, e, p in session.execute(_figures(UsageDaily, UsageDaily.day))
        if d.isoformat() >= since
    }
    stored_months = {
        (u, m, mo): (int(t), int(e), int(p))
        for u, m, mo, t, e, p in session.execute(_figures(UsageMonthly, UsageMonthly.month))
        if mo >= since[:7]
    }
    for table, rebuilt, stored in (
        ("usage_daily", days, stored_days),
        ("usage_monthly", months, stored_months),
    ):
        for key in sorted(stored.keys() | rebuilt.keys()):
            figures = rebuilt.get(key)
            want = (figures[0], figures[1], figures[2]) if figures else None
            if want != stored.get(key):
                user, metric, period = key
                report.drift.append(Drift(table, user, metric, period, stored.get(key), want))
    if fix and report.drift:
        for item in report.drift:
            _rewrite(session, item)
        report.fixed = True
    return report


def _rebuilt_days(
    session: Session, step: int, progress: Callable[[int], None] | None, report: RebuildReport
) -> dict[tuple[str, str, str], list[int]]:
    low, high = session.execute(
        select(func.min(ConsumptionEvent.id), func.max(ConsumptionEvent.id))
    ).one()
    days: dict[tuple[str, str, str], list[int]] = {}
    start = low or 0
    while low is not None and start <= high:
        stop = min(start + step, high + 1)
        for user, metric, day, total, count, peak in session.execute(
            _day_totals(session, start, stop)
        ):
            key = (user, metric, day if isinstance(day, str) else day.isoformat())
            row = days.setdefault(key, [0, 0, 0])
            row[0] += int(total)
            row[1] += int(count)
            row[2] = max(row[2], int(peak))
            report.events += int(count)
        if progress:
            progress(stop - start)
        start = stop
    return days


def _figures(table: Any, period: Any) -> Select[Any]:
    return select(table.user_id, table.metric, period, table.total, table.events, table.peak)


def _day_totals(session: Session, start: int, stop: int) -> Select[Any]:
    if session.get_bind().dialect.name == "postgresql":
        day: Any = cast(literal_column("(date AT TIME ZONE 'UTC')"), Date)
    else:
        day = func.substr(ConsumptionEvent.date, 1, 10)
    return (
        select(
            ConsumptionEvent.user_id,
            ConsumptionEvent.metric,
            day,
            func.sum(ConsumptionEvent.value),
            func.count(),
            func.max(ConsumptionEvent.value),
        )
        .where(ConsumptionEvent.id >= start, ConsumptionEvent.id < stop)
        .group_by(ConsumptionEvent.user_id, ConsumptionEvent.metric, day)
    )


def _rewrite(session: Session, item: Drift) -> None:
    table: Any = UsageDaily if item.table == "usage_daily" else UsageMonthly
    column = "day" if item.table == "usage_daily" else "month"
    period: Any = date.fromisoformat(item.period) if column == "day" else item.period
    key = {"user_id": item.user_id, "metric": item.metric, column: period}
    if item.rebuilt is None:
        session.execute(
            delete(table).where(*(getattr(table, name) == value for name, value in key.items()))
        )
        return
    figures = dict(zip(("total", "events", "peak"), item.rebuilt, strict=True))
    insert = insert_for(session)
    session.execute(
        insert(table)
        .values(**key, **figures)
        .on_conflict_do_update(index_elements=list(key), set_=figures)
    )
