"""`meterbill worker`: runs queued jobs with retries and backoff, and the schedules.

Schedules are jobs too: each period, every worker tries to enqueue the schedule's job
under a key naming the period (``schedule:grace:<n>``); the unique key lets one of them
in, so a schedule runs once per period however many workers there are.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from meterbill.billing.gateway import StripeGateway
from meterbill.config import Catalog, Settings
from meterbill.db import Database, utcnow
from meterbill.jobs import queue
from meterbill.jobs.queue import ClaimedJob, PermanentJobError
from meterbill.notify.webhooks import WebhookSecretMissing

log = logging.getLogger("meterbill.worker")
# Errors that retrying cannot fix: a malformed payload, a missing setting.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    PermanentJobError,
    WebhookSecretMissing,
    LookupError,
    ValueError,
)


@dataclass(frozen=True)
class JobContext:
    db: Database
    settings: Settings
    catalog: Catalog
    gateway: StripeGateway
    job: ClaimedJob
    now: datetime


Handler = Callable[[JobContext], Any]


@dataclass(frozen=True)
class Schedule:
    name: str
    every: timedelta


SCHEDULES = (
    Schedule("grace", timedelta(minutes=1)),
    Schedule("reconcile", timedelta(hours=1)),
    Schedule("prune", timedelta(days=1)),
    Schedule("kept_events", timedelta(minutes=5)),
    Schedule("duplicates", timedelta(minutes=5)),
    Schedule("pending_invoices", timedelta(minutes=1)),
)


def default_handlers() -> dict[str, Handler]:
    from meterbill.jobs.handlers import HANDLERS

    return dict(HANDLERS)


def enqueue_due_schedules(db: Database, now: datetime, schedules: tuple[Schedule, ...]) -> None:
    with db.transaction() as session:
        for schedule in schedules:
            period = int(now.timestamp() // schedule.every.total_seconds())
            queue.enqueue(
                session,
                f"schedule.{schedule.name}",
                {"period": period},
                dedupe_key=f"schedule:{schedule.name}:{period}",
                run_at=now,
                max_attempts=3,
            )


class _LeaseKeeper:
    """Extends the lease of every job in hand (claimed, not yet recorded as finished)
    every third of it, in the background; forgets the jobs another worker took over."""

    def __init__(self, db: Database, lease: timedelta, clock: Callable[[], datetime]) -> None:
        self._db, self._lease, self._clock = db, lease, clock
        self._lock = threading.Lock()
        self._held: dict[int, ClaimedJob] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="job-leases")

    def hold(self, jobs: list[ClaimedJob]) -> None:
        with self._lock:
            self._held.update((job.id, job) for job in jobs)

    def release(self, jobs: list[ClaimedJob]) -> None:
        with self._lock:
            for job in jobs:
                self._held.pop(job.id, None)

    def still_held(self, job: ClaimedJob) -> bool:
        with self._lock:
            return job.id in self._held

    def _run(self) -> None:
        while not self._stop.wait(self._lease.total_seconds() / 3):
            with self._lock:
                jobs = list(self._held.values())
            try:
                kept = queue.extend_leases(self._db, jobs, self._clock() + self._lease)
            except Exception:
                log.exception("could not extend the leases of the jobs in hand")
                continue
            lost = [job for job in jobs if job.id not in kept]
            for job in lost:
                log.warning("lease lost", extra={"job_id": job.id})
            self.release(lost)

    def __enter__(self) -> _LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# Claims are batched: a batch of no-op jobs costs one transaction to claim and one to
# finish instead of two a job. Sized to last about BATCH_SECONDS.
MAX_BATCH = 100
FIRST_BATCH = 10
BATCH_SECONDS = 0.2
# A batch sized by fast jobs may hold slow ones (PDF rendering): past this, or when the
# worker is asked to stop, the jobs not started yet are given back to the queue at once
# (no attempt spent) instead of waiting in this worker's hand.
BATCH_SECONDS_MAX = 5.0
_FAILED = object()


def _not_sent_from_a_demo_database(ctx: JobContext) -> str:
    return "not sent: demo database"


class Worker:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        gateway: StripeGateway | None = None,
        clock: Callable[[], datetime] = utcnow,
        worker_id: str | None = None,
        handlers: dict[str, Handler] | None = None,
        schedules: tuple[Schedule, ...] = SCHEDULES,
    ) -> None:
        self.settings = settings
        self.db = db
        self.catalog = settings.catalog()
        self.gateway = gateway or StripeGateway(settings)
        self.clock = clock
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.handlers = handlers if handlers is not None else default_handlers()
        self.schedules = schedules
        self.lease = timedelta(seconds=settings.job_lease_seconds)
        self._periods: dict[str, int] = {}
        self.sandboxed = False
        self._batch_size = FIRST_BATCH

    def _stay_inside_on_a_demo_database(self) -> None:
        """On a database `meterbill demo` made, send nothing out (checked until it is one:
        the demo may be loaded while this worker runs)."""
        from meterbill.sandbox import is_demo_database, outgoing_job_kinds, sandboxed

        if self.sandboxed or not is_demo_database(self.db):
            return
        self.sandboxed = True
        self.settings = sandboxed(self.settings)
        self.gateway = StripeGateway(self.settings)
        self.handlers = {
            **self.handlers,
            **{kind: _not_sent_from_a_demo_database for kind in outgoing_job_kinds()},
        }
        log.warning("demo database: emails, webhooks and Stripe calls are not sent")

    def tick_schedules(self) -> None:
        """Enqueue the schedules whose period began since this worker last looked."""
        now = self.clock()
        due = []
        for schedule in self.schedules:
            period = int(now.timestamp() // schedule.every.total_seconds())
            if self._periods.get(schedule.name) != period:
                due.append(schedule)
                self._periods[schedule.name] = period
        if due:
            enqueue_due_schedules(self.db, now, tuple(due))

    def run_batch(self, limit: int | None = None, stop: threading.Event | None = None) -> int:
        """Claim a batch of due jobs, run them one after the other, record the successes
        in one transaction; returns how many were claimed (0: nothing is due).

        The batch is sized so that it takes about BATCH_SECONDS at the pace of the last
        ones (short jobs come by the hundred, slow ones a few at a time, so that other
        workers get their share); the jobs in hand keep their lease while they wait."""
        self._stay_inside_on_a_demo_database()
        size = max(1, min(self._batch_size, limit or MAX_BATCH))
        jobs = queue.claim(self.db, self.id, self.clock(), self.lease, size)
        if not jobs:
            return 0
        started = time.monotonic()
        done: list[ClaimedJob] = []
        results: dict[int, Any] = {}
        ran = 0
        with _LeaseKeeper(self.db, self.lease, self.clock) as keeper:
            keeper.hold(jobs)
            for index, job in enumerate(jobs):
                if index and (
                    (stop is not None and stop.is_set())
                    or time.monotonic() - started > BATCH_SECONDS_MAX
                ):
                    rest = [left for left in jobs[index:] if keeper.still_held(left)]
                    keeper.release(rest)
                    queue.give_back(self.db, rest)
                    break
                ran += 1
                if not keeper.still_held(job):
                    continue  # taken over while it waited: the other worker runs it
                outcome = self._run(job)
                if outcome is _FAILED:
                    keeper.release([job])
                else:
                    done.append(job)
                    results[job.id] = outcome
            finished = queue.finish(self.db, done, self.clock())
        self._pace(ran, time.monotonic() - started)
        for job in done:
            if job.id not in finished:
                log.warning("job finished after its lease was taken over", extra={"job_id": job.id})
            elif log.isEnabledFor(logging.INFO):
                log.info(
                    "job done",
                    extra={
                        "job_id": job.id,
                        "kind": job.kind,
                        "attempt": job.attempt,
                        "result": results[job.id],
                    },
                )
        return len(jobs)

    def _pace(self, count: int, seconds: float) -> None:
        per_job = max(seconds / count, 1e-6)
        self._batch_size = max(1, min(MAX_BATCH, int(BATCH_SECONDS / per_job)))

    def _run(self, job: ClaimedJob) -> Any:
        """Run one claimed job; its result, or _FAILED once the failure is recorded."""
        handler = self.handlers.get(job.kind)
        try:
            if handler is None:
                raise PermanentJobError(f"no handler for job kind {job.kind}")
            return handler(
                JobContext(self.db, self.settings, self.catalog, self.gateway, job, self.clock())
            )
        except Exception as exc:
            permanent = isinstance(exc, PERMANENT_ERRORS)
            status = queue.mark_failed(
                self.db, job, self.clock(), f"{type(exc).__name__}: {exc}", permanent=permanent
            )
            log.log(
                logging.ERROR if status == "failed" else logging.WARNING,
                "job failed",
                extra={
                    "job_id": job.id,
                    "kind": job.kind,
                    "attempt": job.attempt,
                    "next": status,
                    "error": f"{type(exc).__name__}: {exc}",
                },
            )
            return _FAILED

    def run_pending(self, max_jobs: int | None = None) -> int:
        """Run due jobs until none is left (or `max_jobs`); returns how many ran."""
        count = 0
        while max_jobs is None or count < max_jobs:
            ran = self.run_batch(None if max_jobs is None else max_jobs - count)
            if not ran:
                break
            count += ran
        return count

    def run_forever(self, stop: threading.Event) -> None:
        """Poll until `stop` is set; the job in hand is finished before returning, the
        rest of its batch given back to the queue."""
        log.info("worker started", extra={"worker": self.id})
        while not stop.is_set():
            try:
                if self.schedules:
                    self.tick_schedules()
                ran = self.run_batch(stop=stop)
            except Exception:  # the database away for a moment: wait and try again
                log.exception("worker loop error")
                ran = 0
            if not ran:
                stop.wait(self.settings.worker_poll_seconds)
        log.info("worker stopped", extra={"worker": self.id})
