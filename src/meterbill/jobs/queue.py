"""The job queue's operations: enqueue in the caller's transaction, claim with a lease,
finish, retry with backoff, park, and what an operator needs to look and act.

Claiming takes the oldest due job with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
several workers share the queue without waiting on each other's rows and never take the
same job; on SQLite the write transaction (``BEGIN IMMEDIATE``) serializes claims instead.
A claimed job carries a lease (``locked_until``) that the worker extends while it runs:
a worker that dies leaves a job whose lease runs out, and the next claim takes it over.
Every finish is conditional on the claim token, so a worker that lost its lease cannot
overwrite the outcome of the one that took over.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session

from meterbill.db import Database, insert_for, utcnow
from meterbill.jobs.models import Job

BACKOFF_BASE_SECONDS = 10.0
BACKOFF_CAP_SECONDS = 3600.0
DEFAULT_MAX_ATTEMPTS = 10
DEDUPE_KEY_LENGTH = 255  # the column's width


class PermanentJobError(Exception):
    """Retrying cannot help (bad payload, refused address, missing configuration): the
    job is parked at once for an operator."""


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    kind: str
    payload: dict[str, Any]
    dedupe_key: str | None
    attempt: int
    max_attempts: int
    token: str


def enqueue(
    session: Session,
    kind: str,
    payload: dict[str, Any],
    *,
    dedupe_key: str | None = None,
    run_at: datetime | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> int | None:
    """Add a job in the caller's transaction: it exists if and only if the caller commits.

    With a ``dedupe_key`` the job is created once per key; a second enqueue with the same
    key does nothing and returns None. Returns the new job's id otherwise.
    """
    now = utcnow()
    if dedupe_key is not None and len(dedupe_key) > DEDUPE_KEY_LENGTH:
        # Keys name their cause (a user id may be 255 characters long): keep a readable
        # head and make the rest a digest, still one key per cause.
        digest = hashlib.sha256(dedupe_key.encode()).hexdigest()
        dedupe_key = f"{dedupe_key[: DEDUPE_KEY_LENGTH - 72]}…sha256:{digest}"
    statement = (
        insert_for(session)(Job)
        .values(
            kind=kind,
            payload=json.dumps(payload, separators=(",", ":"), default=str),
            dedupe_key=dedupe_key,
            status="queued",
            attempts=0,
            max_attempts=max_attempts,
            run_at=run_at or now,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(Job.id)
    )
    return session.execute(statement).scalar_one_or_none()


def backoff(attempt: int) -> timedelta:
    """How long to wait after the `attempt`-th failure: doubling from 10 s, capped at an
    hour, with up to 20 % jitter so that failed jobs do not all come back at once."""
    seconds = min(BACKOFF_BASE_SECONDS * 2 ** max(attempt - 1, 0), BACKOFF_CAP_SECONDS)
    return timedelta(seconds=seconds * (1 + random.random() * 0.2))


def _due(now: datetime) -> Any:
    return or_(
        and_(Job.status == "queued", Job.run_at <= now),
        and_(Job.status == "running", Job.locked_until < now),
    )


def claim_next(db: Database, worker_id: str, now: datetime, lease: timedelta) -> ClaimedJob | None:
    """Take the oldest job that is due (or whose worker's lease ran out), or None."""
    with db.reading() as session:  # an idle poll must not take SQLite's write lock
        if session.scalar(select(Job.id).where(_due(now)).limit(1)) is None:
            return None
    with db.transaction() as session:
        while True:
            job = session.scalars(
                select(Job)
                .where(_due(now))
                .order_by(Job.run_at, Job.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if job is None:
                return None
            if job.status == "running" and job.attempts >= job.max_attempts:
                # Its worker died during the last attempt allowed: park it for an operator.
                job.status, job.finished_at = "failed", now
                job.last_error = f"worker {job.locked_by} stopped during the last attempt"
                job.locked_until = None
                continue
            job.attempts += 1
            job.status = "running"
            job.locked_by = f"{worker_id}#{job.attempts}"
            job.locked_until = now + lease
            return ClaimedJob(
                id=job.id,
                kind=job.kind,
                payload=json.loads(job.payload or "{}"),
                dedupe_key=job.dedupe_key,
                attempt=job.attempts,
                max_attempts=job.max_attempts,
                token=job.locked_by,
            )


def _held(job: ClaimedJob) -> Any:
    return and_(Job.id == job.id, Job.status == "running", Job.locked_by == job.token)


def extend_lease(db: Database, job: ClaimedJob, until: datetime) -> bool:
    """Keep the job while it runs; False when another worker has taken it over."""
    with db.transaction() as session:
        result = session.execute(update(Job).where(_held(job)).values(locked_until=until))
        return bool(result.rowcount)  # type: ignore[attr-defined]


def mark_done(db: Database, job: ClaimedJob, now: datetime) -> bool:
    with db.transaction() as session:
        result = session.execute(
            update(Job)
            .where(_held(job))
            .values(status="done", finished_at=now, locked_until=None, last_error=None)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def mark_failed(
    db: Database, job: ClaimedJob, now: datetime, error: str, *, permanent: bool = False
) -> str:
    """Schedule the next attempt after a backoff, or park the job when none is left.

    Returns the job's new status (``queued`` or ``failed``), or ``lost`` when another
    worker had taken it over.
    """
    parked = permanent or job.attempt >= job.max_attempts
    values: dict[str, Any] = {"last_error": error[:4000], "locked_until": None}
    if parked:
        values.update(status="failed", finished_at=now)
    else:
        values.update(status="queued", run_at=now + backoff(job.attempt))
    with db.transaction() as session:
        result = session.execute(update(Job).where(_held(job)).values(**values))
        if not result.rowcount:  # type: ignore[attr-defined]
            return "lost"
    return "failed" if parked else "queued"


def retry_job(session: Session, job_id: int, now: datetime) -> bool:
    """Put a parked (failed) job back in the queue with a fresh set of attempts."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "failed")
        .values(status="queued", attempts=0, run_at=now, finished_at=None, locked_by=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def list_jobs(session: Session, *, status: str | None = None, limit: int = 50) -> list[Job]:
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if status:
        query = query.where(Job.status == status)
    return list(session.scalars(query))


def prune_jobs(session: Session, finished_before: datetime, now: datetime) -> int:
    """Delete jobs that finished successfully before the cutoff, and schedule runs older
    than a day (their period is over: the key cannot come back); parked ones stay."""
    result = session.execute(
        delete(Job).where(
            Job.status == "done",
            or_(
                Job.finished_at < finished_before,
                and_(Job.kind.like("schedule.%"), Job.finished_at < now - timedelta(days=1)),
            ),
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
