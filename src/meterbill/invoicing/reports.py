"""Read-only views of invoices for the operator console: revenue per month, and documents
filtered by month, status and user."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from meterbill.db import page_of
from meterbill.invoicing.models import Invoice

# Sums of months that are over, per database. Documents are immutable (triggers refuse any
# UPDATE or DELETE) and carry the month they were issued in, so a month that has ended
# never changes again: its sum is read once per process.
_closed_months: dict[tuple[str, str], int] = {}
_closed_lock = threading.Lock()


def _is_closed(month: str, now: datetime) -> bool:
    year, number = (int(part) for part in month.split("-"))
    following = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=UTC)
    return now >= following + timedelta(days=1)  # a day's margin for the seller's time zone


def net_revenue_by_month(session: Session, months: list[str], now: datetime) -> dict[str, int]:
    """Cents invoiced before tax in each month (YYYY-MM), credit notes deducted."""
    database = str(session.get_bind().engine.url)
    with _closed_lock:
        known = {
            m: _closed_months[(database, m)] for m in months if (database, m) in _closed_months
        }
    missing = [month for month in months if month not in known]
    rows = session.execute(
        select(Invoice.period, func.coalesce(func.sum(Invoice.amount_ht), 0))
        .where(Invoice.period.in_(missing))
        .group_by(Invoice.period)
    ).all()
    found = {str(period): int(total) for period, total in rows}
    with _closed_lock:
        for month in missing:
            if _is_closed(month, now):
                _closed_months[(database, month)] = found.get(month, 0)
    return {month: known.get(month, found.get(month, 0)) for month in months}


def search_documents(
    session: Session,
    *,
    month: str | None = None,
    status: str | None = None,
    kind: str | None = None,
    user_id: str | None = None,
    page: int = 1,
    per_page: int = 50,
) -> tuple[list[Invoice], bool]:
    """Invoices and credit notes newest first, filtered; and whether more follow."""
    query = select(Invoice)
    if month:
        query = query.where(Invoice.period == month)
    if status:
        query = query.where(Invoice.status == status)
    if kind:
        query = query.where(Invoice.kind == kind)
    if user_id is not None:
        query = query.where(Invoice.user_id == user_id)
    return page_of(session, query.order_by(Invoice.id.desc()), page, per_page)
