"""Read-only views of the job queue for the operator console."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from meterbill.db import page_of
from meterbill.jobs.models import Job


def count_jobs(session: Session, status: str) -> int:
    """How many jobs have this status (read from the status index)."""
    return int(
        session.scalar(select(func.count()).select_from(Job).where(Job.status == status)) or 0
    )


def page_of_jobs(
    session: Session, *, status: str | None = None, page: int = 1, per_page: int = 50
) -> tuple[list[Job], bool]:
    """Jobs newest first, optionally of one status; and whether more follow."""
    query = select(Job)
    if status:
        query = query.where(Job.status == status)
    return page_of(session, query.order_by(Job.id.desc()), page, per_page)
