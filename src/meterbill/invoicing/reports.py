"""Read-only views of invoices for the operator console: revenue per month, and documents
filtered by month, status and user."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from meterbill.db import page_of
from meterbill.invoicing.models import Invoice


def net_revenue_by_month(session: Session, months: list[str]) -> dict[str, int]:
    """Cents invoiced before tax in each month (YYYY-MM), credit notes deducted."""
    rows = session.execute(
        select(Invoice.period, func.coalesce(func.sum(Invoice.amount_ht), 0))
        .where(Invoice.period.in_(months))
        .group_by(Invoice.period)
    ).all()
    found = {str(period): int(total) for period, total in rows}
    return {month: found.get(month, 0) for month in months}


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
