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
    """Extends the running job's lease every third of it, in the background."""

    def __init__(
        self, db: Database, job: ClaimedJob, lease: timedelta, clock: Callable[[], datetime]
    ):
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(db, job, lease, clock), daemon=True, name=f"lease-{job.id}"
        )

    def _run(
        self, db: Database, job: ClaimedJob, lease: timedelta, clock: Callable[[], datetime]
    ) -> None:
        while not self._stop.wait(lease.total_seconds() / 3):
            try:
                if not queue.extend_lease(db, job, clock() + lease):
                    log.warning("lease lost", extra={"job_id": job.id})
                    return
            except Exception:
                log.exception("could not extend a job's lease", extra={"job_id": job.id})

    def __enter__(self) -> _LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


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

    def _stay_inside_on_a_demo_database(self) -> None:
        """On a database `meterbill demo` made, send nothing out (checked until it is one:
        the demo may be loaded while this worker runs)."""
        from meterbill.sandbox import OUTGOING_JOB_KINDS, is_demo_database, sandboxed

        if self.sandboxed or not is_demo_database(self.db):
            return
        self.sandboxed = True
        self.settings = sandboxed(self.settings)
        self.gateway = StripeGateway(self.settings)
        self.handlers = {
            **self.handlers,
            **{kind: _not_sent_from_a_demo_database for kind in OUTGOING_JOB_KINDS},
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

    def run_one(self) -> ClaimedJob | None:
        """Claim and run one due job; None when nothing is due."""
        self._stay_inside_on_a_demo_database()
        job = queue.claim_next(self.db, self.id, self.clock(), self.lease)
        if job is None:
            return None
        handler = self.handlers.get(job.kind)
        try:
            if handler is None:
                raise PermanentJobError(f"no handler for job kind {job.kind}")
            with _LeaseKeeper(self.db, job, self.lease, self.clock):
                result = handler(
                    JobContext(
                        self.db, self.settings, self.catalog, self.gateway, job, self.clock()
                    )
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
            return job
        if not queue.mark_done(self.db, job, self.clock()):
            log.warning("job finished after its lease was taken over", extra={"job_id": job.id})
        else:
            log.info(
                "job done",
                extra={
                    "job_id": job.id,
                    "kind": job.kind,
                    "attempt": job.attempt,
                    "result": result,
                },
            )
        return job

    def run_pending(self, max_jobs: int | None = None) -> int:
        """Run due jobs until none is left (or `max_jobs`); returns how many ran."""
        count = 0
        while max_jobs is None or count < max_jobs:
            if self.run_one() is None:
                break
            count += 1
        return count

    def run_forever(self, stop: threading.Event) -> None:
        """Poll until `stop` is set; the job in hand is finished before returning."""
        log.info("worker started", extra={"worker": self.id})
        while not stop.is_set():
            try:
                if self.schedules:
                    self.tick_schedules()
                job = self.run_one()
            except Exception:  # the database away for a moment: wait and try again
                log.exception("worker loop error")
                job = None
            if job is None:
                stop.wait(self.settings.worker_poll_seconds)
        log.info("worker stopped", extra={"worker": self.id})
