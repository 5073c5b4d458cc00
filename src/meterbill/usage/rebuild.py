"""Rebuilding the per-day totals from the raw events, and reporting where they drifted.

Raw events are read in ranges of their primary key (an index range scan per step, so
progress can be reported and memory stays bounded by the number of daily totals, not of
events). While it runs, PostgreSQL writers to `consumption_log` wait (SHARE lock), so the
totals it writes match the events exactly; SQLite's write lock does the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import Date, cast, delete, func, literal_column, select, text
from sqlalchemy.orm import Session

from meterbill.db import insert_for
from meterbill.usage.models import ConsumptionEvent, UsageDaily

Key = tuple[str, str, date]
Figures = tuple[int, int, int]  # total, events, peak


@dataclass(frozen=True)
class Drift:
    user_id: str
    metric: str
    day: date
    stored: Figures | None  # None: no stored total for a day that has events
    rebuilt: Figures | None  # None: a stored total for a day without events


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


def rebuild_daily_totals(
    session: Session,
    *,
    fix: bool = True,
    step: int = 500_000,
    progress: Callable[[int], None] | None = None,
) -> RebuildReport:
    """Recompute every daily total from `consumption_log`, compare with `usage_daily`, and
    (when `fix`) rewrite the totals that differ. `progress(n)` is told each range's size."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE consumption_log IN SHARE MODE"))
    low, high = session.execute(
        select(func.min(ConsumptionEvent.id), func.max(ConsumptionEvent.id))
    ).one()
    rebuilt: dict[Key, list[int]] = {}
    report = RebuildReport()
    start = low or 0
    while low is not None and start <= high:
        stop = min(start + step, high + 1)
        for user, metric, day, total, count, peak in session.execute(
            _day_totals(session, start, stop)
        ):
            key = (user, metric, _as_date(day))
            row = rebuilt.setdefault(key, [0, 0, 0])
            row[0] += int(total)
            row[1] += int(count)
            row[2] = max(row[2], int(peak))
            report.events += int(count)
        if progress:
            progress(stop - start)
        start = stop
    stored = {
        (u, m, d): (int(t), int(e), int(p))
        for u, m, d, t, e, p in session.execute(
            select(
                UsageDaily.user_id,
                UsageDaily.metric,
                UsageDaily.day,
                UsageDaily.total,
                UsageDaily.events,
                UsageDaily.peak,
            )
        )
    }
    report.totals = len(rebuilt)
    for key in sorted(stored.keys() | rebuilt.keys()):
        want = tuple(rebuilt[key]) if key in rebuilt else None
        have = stored.get(key)
        if want != have:
            report.drift.append(Drift(*key, stored=have, rebuilt=want))  # type: ignore[arg-type]
    if fix and report.drift:
        _rewrite(session, report.drift)
        report.fixed = True
    return report


def _day_totals(session: Session, start: int, stop: int):  # type: ignore[no-untyped-def]
    if session.get_bind().dialect.name == "postgresql":
        day = cast(literal_column("(date AT TIME ZONE 'UTC')"), Date)
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


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def _rewrite(session: Session, drift: list[Drift]) -> None:
    insert = insert_for(session)
    for item in drift:
        if item.rebuilt is None:
            session.execute(
                delete(UsageDaily).where(
                    UsageDaily.user_id == item.user_id,
                    UsageDaily.metric == item.metric,
                    UsageDaily.day == item.day,
                )
            )
            continue
        total, events, peak = item.rebuilt
        statement = insert(UsageDaily).values(
            user_id=item.user_id,
            metric=item.metric,
            day=item.day,
            total=total,
            events=events,
            peak=peak,
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["user_id", "metric", "day"],
                set_={"total": total, "events": events, "peak": peak},
            )
        )
