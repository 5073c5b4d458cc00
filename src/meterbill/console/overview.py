"""The console's front page: revenue, subscriptions, grace periods, churn, parked work and
the month's top consumers."""

from __future__ import annotations

import time
import weakref
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from meterbill.billing import reports as billing_reports
from meterbill.console.charts import bar_chart
from meterbill.console.rendering import page
from meterbill.console.session import OperatorDep, ServicesDep
from meterbill.db import Database
from meterbill.invoicing.reports import net_revenue_by_month
from meterbill.jobs.reports import count_jobs
from meterbill.services import Services
from meterbill.usage.recording import month_of
from meterbill.usage.reports import top_consumers

router = APIRouter(prefix="/admin", include_in_schema=False)
MONTHS_SHOWN = 6


def last_months(now: datetime, count: int) -> list[str]:
    """The `count` months up to `now`'s, oldest first, as YYYY-MM."""
    year, month = now.year, now.month
    months = []
    for _ in range(count):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return months[::-1]


def month_start(now: datetime) -> datetime:
    return datetime(now.year, now.month, 1, tzinfo=UTC)


# The month's top consumers are read from every monthly row of the month (no index holds
# the totals: it would cost every recorded event an index write, see 0013_hot_rollups);
# at 100,000 users that is tens of milliseconds per meter, so each process keeps them for
# TOP_SECONDS.
TOP_SECONDS = 30.0
_TOP: weakref.WeakKeyDictionary[Database, tuple[str, float, dict[str, list[tuple[str, int]]]]]
_TOP = weakref.WeakKeyDictionary()


def _top_consumers(services: Services, session: Session, month: str) -> dict[str, Any]:
    kept = _TOP.get(services.db)
    if kept is not None and kept[0] == month and time.monotonic() < kept[1]:
        return kept[2]
    top = top_consumers(session, services.catalog.meters, month)
    _TOP[services.db] = (month, time.monotonic() + TOP_SECONDS, top)
    return top


def overview_figures(services: Services) -> dict[str, Any]:
    """Everything the overview shows, read in one transaction."""
    now = services.now()
    months = last_months(now, MONTHS_SHOWN)
    start = month_start(now)
    end = datetime(start.year + (start.month == 12), start.month % 12 + 1, 1, tzinfo=UTC)
    with services.db.reading() as session:
        revenue = net_revenue_by_month(session, months, now)
        by_plan = billing_reports.subscriptions_by_plan(session)
        grace, grace_total = billing_reports.users_in_grace(session, now)
        churn = billing_reports.churned_between(session, start, end)
        parked = count_jobs(session, "failed")
        failed_events = billing_reports.count_failed_events(session)
        top = _top_consumers(services, session, month_of(now))
    current, previous = revenue[months[-1]], revenue[months[-2]]
    return {
        "now": now,
        "month": months[-1],
        "revenue": revenue,
        "mrr": current,
        "mrr_change": current - previous,
        "mrr_change_pct": round((current - previous) / previous * 100, 1) if previous else None,
        "by_plan": by_plan,
        "active": sum(by_plan.values()),
        "grace": grace,
        "grace_total": grace_total,
        "churn": churn,
        "parked": parked,
        "failed_events": failed_events,
        "top": top,
    }


@router.get("")
def overview(request: Request, operator: OperatorDep, services: ServicesDep) -> Response:
    figures = overview_figures(services)
    chart = bar_chart(
        [(m[2:], cents / 100) for m, cents in figures["revenue"].items()],
        "Net revenue per month (excl. VAT)",
        ", ".join(f"{m}: {c / 100:.2f}" for m, c in figures["revenue"].items()),
        "€",
        "mrr-chart",
    )
    return page(
        request,
        "overview.html",
        {"operator": operator, "section": "overview", "chart": chart, **figures},
    )
