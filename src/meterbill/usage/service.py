"""Monthly consumption against plan limits, read from the monthly totals."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.auth.models import User
from meterbill.billing.models import Subscription
from meterbill.billing.subscriptions import (
    current_subscription,
    deciding_subscription,
    effective_plan,
)
from meterbill.config import Catalog, Meter, Plan
from meterbill.db import Database
from meterbill.errors import InvalidMonth
from meterbill.usage.models import UsageMonthly
from meterbill.usage.quota_statement import read_month

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def parse_month(text: str) -> tuple[date, date]:
    """The first day of the month and of the next one, for `YYYY-MM`; else InvalidMonth."""
    match = _MONTH.fullmatch(text)
    if not match:
        raise InvalidMonth()
    year, month = int(match.group(1)), int(match.group(2))
    if not 1 <= month <= 12 or year < 1:
        raise InvalidMonth()
    start = date(year, month, 1)
    end = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return start, end


@dataclass(frozen=True)
class MetricUsage:
    metric: str
    used: int
    limit: int | None  # None: the plan sets no limit (as in /usage/check)
    usage_pct: float
    alert: str | None  # "soft" | "hard" | None


def metric_usage(plan: Plan, metric: str, used: int) -> MetricUsage:
    """Where `used` stands against the plan's limit, judged as /usage/check judges it: no
    limit means no alert; a limit of 0 is reached at once."""
    limit = plan.limit(metric)
    if limit is None:
        return MetricUsage(metric, used, None, 0.0, None)
    pct = round(used / limit * 100, 1) if limit > 0 else 100.0
    alert = None
    if used >= limit:
        alert = "hard"
    elif used >= limit * plan.alert_ratio:
        alert = "soft"
    return MetricUsage(metric, used, limit, pct, alert)


def month_usage(
    session: Session, meters: Mapping[str, Meter], user_id: str, month: str
) -> dict[str, int]:
    """Each metric's figure for `month` (YYYY-MM): one row per metric, whatever the volume."""
    rows = session.execute(
        select(
            UsageMonthly.metric, UsageMonthly.total, UsageMonthly.events, UsageMonthly.peak
        ).where(UsageMonthly.user_id == user_id, UsageMonthly.month == month)
    ).all()
    return {metric: aggregate(meters.get(metric), t, e, p) for metric, t, e, p in rows}


def plans_of(
    session: Session, catalog: Catalog, user_ids: Iterable[str], now: datetime
) -> dict[str, Plan]:
    """Each user's effective plan (of the subscription `current_subscription` gives), in
    one query."""
    ids = sorted(set(user_ids))
    rows_of: dict[str, list[Subscription]] = {}
    for row in session.scalars(select(Subscription).where(Subscription.user_id.in_(ids))):
        rows_of.setdefault(row.user_id, []).append(row)
    return {
        uid: catalog.plan(effective_plan(deciding_subscription(rows_of.get(uid, [])), now))
        for uid in ids
    }


def aggregate(meter: Meter | None, total: Any, count: Any, peak: Any) -> int:
    """A month's figure for a meter from the sums, counts and peaks of its days."""
    aggregation = meter.aggregation if meter else "sum"
    if aggregation == "count":
        return int(count or 0)
    if aggregation == "max":
        return int(peak or 0)
    return int(total or 0)


@dataclass(frozen=True)
class Consumption:
    user_id: str
    plan: str
    month: str
    metrics: dict[str, MetricUsage]


def monthly_consumption(
    session: Session, catalog: Catalog, user_id: str, month: str, now: datetime
) -> Consumption:
    """What the user consumed in `month`, against the limits of their effective plan."""
    parse_month(month)
    plan = catalog.plan(effective_plan(current_subscription(session, user_id), now))
    totals = month_usage(session, catalog.meters, user_id, month)
    return consumption_of(catalog, user_id, month, plan, totals)


def consumption_of(
    catalog: Catalog, user_id: str, month: str, plan: Plan, totals: Mapping[str, int]
) -> Consumption:
    names = [*catalog.meters, *(m for m in plan.limits if m not in catalog.meters)]
    metrics = {name: metric_usage(plan, name, totals.get(name, 0)) for name in names}
    return Consumption(user_id, plan.name, month, metrics)


@dataclass(frozen=True)
class StoredUser:
    exists: bool
    email: str | None
    locale: str | None


def read_consumption(
    db: Database, catalog: Catalog, user_id: str, month: str, now: datetime
) -> tuple[Consumption, StoredUser]:
    """`monthly_consumption` in one session, with the stored user (so a token's user is
    checked without a query of its own). On PostgreSQL: one statement, no transaction."""
    parse_month(month)
    if db.sqlite:
        with db.reading() as session:
            user = session.get(User, user_id)
            stored = StoredUser(
                user is not None, user.email if user else None, user.locale if user else None
            )
            return monthly_consumption(session, catalog, user_id, month, now), stored
    with db.autocommit() as raw:
        read = read_month(raw, catalog, user_id, month, now)
    totals = {
        metric: aggregate(catalog.meters.get(metric), *figures)
        for metric, figures in read.totals.items()
    }
    report = consumption_of(catalog, user_id, month, read.plan, totals)
    return report, StoredUser(read.user_exists, read.email, read.locale)
