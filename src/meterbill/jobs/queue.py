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

from sqlalchemy import String, and_, cast, delete, event, literal, or_, select, update
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


@dataclass(frozen=True)
class NewJob:
    """A job to enqueue (see `enqueue`)."""

    kind: str
    payload: dict[str, Any]
    dedupe_key: str | None = None
    run_at: datetime | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS


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
    key does nothing and returns None. Returns the new job's id otherwise — or None in a
    session that writes its jobs at commit (`write_jobs_at_commit`).
    """
    row = _row(NewJob(kind, payload, dedupe_key, run_at, max_attempts), utcnow())
    deferred = session.info.get(_AT_COMMIT)
    if deferred is not None:
        deferred.append(row)
        return None
    statement = (
        insert_for(session)(Job)
        .values(**row)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(Job.id)
    )
    return session.execute(statement).scalar_one_or_none()


def enqueue_many(session: Session, jobs: list[NewJob]) -> int:
    """`enqueue` for several jobs in one statement (one round trip per thousand jobs);
    returns how many were new (0 in a session that writes its jobs at commit)."""
    if not jobs:
        return 0
    now = utcnow()
    rows = [_row(job, now) for job in jobs]
    deferred = session.info.get(_AT_COMMIT)
    if deferred is not None:
        deferred.extend(rows)
        return 0
    statement = (
        insert_for(session)(Job)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(Job.id)
    )
    return len(session.execute(statement, rows).all())


def _row(job: NewJob, now: datetime) -> dict[str, Any]:
    dedupe_key = job.dedupe_key
    if dedupe_key is not None and len(dedupe_key) > DEDUPE_KEY_LENGTH:
        # Keys name their cause (a user id may be 255 characters long): keep a readable
        # head and make the rest a digest, still one key per cause.
        digest = hashlib.sha256(dedupe_key.encode()).hexdigest()
        dedupe_key = f"{dedupe_key[: DEDUPE_KEY_LENGTH - 72]}…sha256:{digest}"
    return {
        "kind": job.kind,
        "payload": json.dumps(job.payload, separators=(",", ":"), default=str),
        "dedupe_key": dedupe_key,
        "status": "queued",
        "attempts": 0,
        "max_attempts": job.max_attempts,
        "run_at": job.run_at or now,
        "created_at": now,
    }


_AT_COMMIT = "meterbill.jobs.at_commit"


def write_jobs_at_commit(session: Session) -> None:
    """Make `session` keep the jobs it enqueues and write them all in one INSERT just
    before it commits (still: a job exists if and only if the transaction commits).

    For a transaction that holds a lock until its commit (an invoice number's series),
    three jobs cost one round trip under the lock instead of three."""
    session.info[_AT_COMMIT] = []


@event.listens_for(Session, "before_commit")
def _write_kept_jobs(session: Session) -> None:
    rows = session.info.get(_AT_COMMIT)
    if rows:
        session.info[_AT_COMMIT] = []
        # Core, on the table: one multi-row INSERT (the ORM's bulk path splits the rows by
        # which keys are None, and costs more Python than the statement).
        session.connection().execute(
            insert_for(session)(Job.__table__).on_conflict_do_nothing(
                index_elements=["dedupe_key"]
            ),
            rows,
        )


@event.listens_for(Session, "after_rollback")
def _forget_kept_jobs(session: Session) -> None:
    if session.info.get(_AT_COMMIT):
        session.info[_AT_COMMIT] = []


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


def claim(
    db: Database, worker_id: str, now: datetime, lease: timedelta, limit: int
) -> list[ClaimedJob]:
    """Take up to `limit` of the oldest due jobs (or those whose worker's lease ran out),
    in one transaction; each gets its own claim token and the lease."""
    if db.sqlite:  # an idle poll must not take SQLite's write lock
        with db.reading() as session:
            if session.scalar(select(Job.id).where(_due(now)).limit(1)) is None:
                return []
    with db.transaction() as session:
        rows = session.execute(
            select(
                Job.id,
                Job.kind,
                Job.payload,
                Job.dedupe_key,
                Job.status,
                Job.attempts,
                Job.max_attempts,
                Job.locked_by,
            )
            .where(_due(now))
            .order_by(Job.run_at, Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        taken = []
        for row in rows:
            if row.status == "running" and row.attempts >= row.max_attempts:
                # Its worker died during the last attempt allowed: park it for an operator.
                session.execute(
                    update(Job)
                    .where(Job.id == row.id)
                    .values(
                        status="failed",
                        finished_at=now,
                        locked_until=None,
                        last_error=f"worker {row.locked_by} stopped during the last attempt",
                    )
                )
            else:
                taken.append(row)
        if taken:
            # The rows are locked (or, on SQLite, the database is): `attempts` is as read.
            session.execute(
                update(Job)
                .where(Job.id.in_([row.id for row in taken]))
                .values(
                    attempts=Job.attempts + 1,
                    status="running",
                    locked_by=literal(f"{worker_id}#") + cast(Job.attempts + 1, String),
                    locked_until=now + lease,
                )
            )
    return [
        ClaimedJob(
            id=row.id,
            kind=row.kind,
            payload=json.loads(row.payload or "{}"),
            dedupe_key=row.dedupe_key,
            attempt=row.attempts + 1,
            max_attempts=row.max_attempts,
            token=f"{worker_id}#{row.attempts + 1}",
        )
        for row in taken
    ]


def claim_next(db: Database, worker_id: str, now: datetime, lease: timedelta) -> ClaimedJob | None:
    """Take the oldest job that is due (or whose worker's lease ran out), or None."""
    claimed = claim(db, worker_id, now, lease, 1)
    return claimed[0] if claimed else None


def _held(job: ClaimedJob) -> Any:
    return and_(Job.id == job.id, Job.status == "running", Job.locked_by == job.token)


def _update_held(db: Database, jobs: list[ClaimedJob], values: dict[str, Any]) -> set[int]:
    """Update, in one transaction, the jobs still held under their claim token; the ids
    that were."""
    if not jobs:
        return set()
    by_token: dict[str, list[int]] = {}
    for job in jobs:
        by_token.setdefault(job.token, []).append(job.id)
    held: set[int] = set()
    with db.transaction() as session:
        for token, ids in by_token.items():
            result = session.execute(
                update(Job)
                .where(Job.id.in_(ids), Job.status == "running", Job.locked_by == token)
                .values(**values)
                .returning(Job.id)
            )
            held.update(result.scalars())
    return held


def extend_leases(db: Database, jobs: list[ClaimedJob], until: datetime) -> set[int]:
    """Keep the jobs in hand; the ids still held (another worker took over the others)."""
    return _update_held(db, jobs, {"locked_until": until})


def extend_lease(db: Database, job: ClaimedJob, until: datetime) -> bool:
    """Keep the job while it runs; False when another worker has taken it over."""
    return job.id in extend_leases(db, [job], until)


def finish(db: Database, jobs: list[ClaimedJob], now: datetime) -> set[int]:
    """Mark the jobs done in one transaction; the ids that were still held (a job whose
    lease another worker took over keeps that worker's outcome)."""
    return _update_held(
        db, jobs, {"status": "done", "finished_at": now, "locked_until": None, "last_error": None}
    )


def give_back(db: Database, jobs: list[ClaimedJob]) -> set[int]:
    """Return claimed jobs that were not started to the queue (still due, at their place)
    without spending an attempt; the ids that were still held."""
    return _update_held(
        db,
        jobs,
        {"status": "queued", "attempts": Job.attempts - 1, "locked_by": None, "locked_until": None},
    )


def mark_done(db: Database, job: ClaimedJob, now: datetime) -> bool:
    return job.id in finish(db, [job], now)


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
