"""Read-only views of usage for the operator console: the month's top consumers (read from
the monthly totals' index) and one user's usage day by day (from the daily totals)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.config import Meter
from meterbill.usage.models import UsageDaily, UsageMonthly
from meterbill.usage.service import aggregate, parse_month

_COLUMNS = {"sum": UsageMonthly.total, "count": UsageMonthly.events, "max": UsageMonthly.peak}


def top_consumers(
    session: Session, meters: Mapping[str, Meter], month: str, limit: int = 5
) -> dict[str, list[tuple[str, int]]]:
    """For each meter, the users with the highest figure in `month` (YYYY-MM)."""
    parse_month(month)
    top: dict[str, list[tuple[str, int]]] = {}
    for name, meter in meters.items():
        column = _COLUMNS[meter.aggregation]
        rows = session.execute(
            select(UsageMonthly.user_id, column)
            .where(UsageMonthly.month == month, UsageMonthly.metric == name)
            .order_by(column.desc(), UsageMonthly.user_id.desc())
            .limit(limit)
        ).all()
        top[name] = [(str(user_id), int(value)) for user_id, value in rows]
    return top


@dataclass(frozen=True)
class DayUsage:
    day: date
    value: int  # the day's figure (its sum, count or peak)
    month_to_date: int  # the month's figure from its first day up to this one


def days_of_month(
    session: Session, meters: Mapping[str, Meter], user_id: str, month: str
) -> dict[str, list[DayUsage]]:
    """Each meter's usage by the user on every day of `month` that had any."""
    start, end = parse_month(month)
    rows = session.execute(
        select(
            UsageDaily.metric, UsageDaily.day, UsageDaily.total, UsageDaily.events, UsageDaily.peak
        )
        .where(UsageDaily.user_id == user_id, UsageDaily.day >= start, UsageDaily.day < end)
        .order_by(UsageDaily.metric, UsageDaily.day)
    ).all()
    result: dict[str, list[DayUsage]] = {name: [] for name in meters}
    for metric, day, total, events, peak in rows:
        meter = meters.get(metric)
        value = aggregate(meter, total, events, peak)
        days = result.setdefault(metric, [])
        previous = days[-1].month_to_date if days else 0
        running = max(previous, value) if meter and meter.aggregation == "max" else previous + value
        days.append(DayUsage(day, value, running))
    return result
