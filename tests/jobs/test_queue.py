"""The queue itself: transactional enqueue, dedupe, retries with backoff, parking, leases."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from meterbill.cli import app
from meterbill.jobs.models import Job
from meterbill.jobs.queue import (
    PermanentJobError,
    claim_next,
    enqueue,
    mark_done,
    write_jobs_at_commit,
)
from meterbill.jobs.worker import JobContext, Worker
from tests.jobs.conftest import Jobs


def _job(jobs: Jobs, job_id: int) -> Job:
    with jobs.db.reading() as session:
        return session.get_one(Job, job_id)


def test_job_exists_only_if_its_transaction_commits(make_jobs: Callable[..., Jobs]) -> None:
    jobs = make_jobs()
    with pytest.raises(RuntimeError), jobs.db.transaction() as session:
        enqueue(session, "test.noop", {"n": 1})
        raise RuntimeError("the change failed")
    with jobs.db.transaction() as session:
        enqueue(session, "test.noop", {"n": 2})
    with jobs.db.reading() as session:
        payloads = [job.payload for job in session.scalars(select(Job))]
    assert payloads == ['{"n":2}']


def test_jobs_written_at_commit_exist_only_if_it_commits_once_per_key(
    make_jobs: Callable[..., Jobs],
) -> None:
    jobs = make_jobs()
    with pytest.raises(RuntimeError), jobs.db.transaction() as session:
        write_jobs_at_commit(session)
        enqueue(session, "test.noop", {"n": 1})
        raise RuntimeError("the change failed")
    with jobs.db.transaction() as session:
        write_jobs_at_commit(session)
        enqueue(session, "test.noop", {"n": 2}, dedupe_key="cause-2")
        enqueue(session, "test.noop", {"n": 3})
        enqueue(session, "test.noop", {"n": 4}, dedupe_key="cause-2")
        with jobs.db.reading() as other:
            assert other.scalars(select(Job)).all() == []  # not written before the commit
    with jobs.db.transaction() as session:
        write_jobs_at_commit(session)
        enqueue(session, "test.noop", {"n": 5}, dedupe_key="cause-2")
    with jobs.db.reading() as session:
        payloads = [job.payload for job in session.scalars(select(Job).order_by(Job.id))]
    assert payloads == ['{"n":2}', '{"n":3}']


def test_same_dedupe_key_makes_one_job(make_jobs: Callable[..., Jobs]) -> None:
    jobs = make_jobs()
    with jobs.db.transaction() as session:
        first = enqueue(session, "test.noop", {}, dedupe_key="cause-1")
        second = enqueue(session, "test.noop", {}, dedupe_key="cause-1")
    with jobs.db.transaction() as session:
        third = enqueue(session, "test.noop", {}, dedupe_key="cause-1")
    assert first is not None and second is None and third is None


def test_failing_job_backs_off_then_is_parked_and_retried(
    make_jobs: Callable[..., Jobs],
) -> None:
    jobs = make_jobs()
    calls: list[int] = []

    def flaky(ctx: JobContext) -> None:
        calls.append(ctx.job.attempt)
        raise ConnectionError("receiver down")

    jobs.worker.handlers = {"test.flaky": flaky}
    with jobs.db.transaction() as session:
        job_id = enqueue(session, "test.flaky", {}, max_attempts=3)
    assert job_id is not None

    assert jobs.run() == 1
    job = _job(jobs, job_id)
    assert (job.status, job.attempts) == ("queued", 1)
    assert job.last_error == "ConnectionError: receiver down"
    wait = job.run_at - jobs.clock()
    assert timedelta(seconds=10) <= wait <= timedelta(seconds=12)
    assert jobs.run() == 0  # not due yet: no busy retry loop

    jobs.advance(seconds=12)
    assert jobs.run() == 1
    second_wait = _job(jobs, job_id).run_at - jobs.clock()
    assert timedelta(seconds=20) <= second_wait <= timedelta(seconds=24)  # doubled

    jobs.advance(seconds=25)
    jobs.run()
    job = _job(jobs, job_id)
    assert (job.status, job.attempts) == ("failed", 3)
    jobs.advance(hours=2)
    assert jobs.run() == 0 and calls == [1, 2, 3]  # parked: left for an operator

    runner = CliRunner()
    env = {"METERBILL_DATABASE_URL": jobs.settings.database_url}
    listed = runner.invoke(app, ["jobs", "list", "--failed"], env=env)
    assert listed.exit_code == 0, listed.output
    assert f"{job_id}" in listed.output and "test.flaky" in listed.output
    assert "receiver down" in listed.output
    retried = runner.invoke(app, ["jobs", "retry", str(job_id)], env=env)
    assert retried.exit_code == 0, retried.output
    assert runner.invoke(app, ["jobs", "retry", "999999"], env=env).exit_code == 1

    jobs.worker.handlers = {"test.flaky": lambda ctx: calls.append(ctx.job.attempt)}
    jobs.clock.fixed = None  # the CLI queued it at the real time
    assert jobs.run() == 1
    assert _job(jobs, job_id).status == "done" and calls[-1] == 1
    assert "no jobs parked" in runner.invoke(app, ["jobs", "list", "--failed"], env=env).output


def test_permanent_error_parks_at_once(make_jobs: Callable[..., Jobs]) -> None:
    jobs = make_jobs()

    def broken(ctx: JobContext) -> None:
        raise PermanentJobError("bad payload")

    jobs.worker.handlers = {"test.broken": broken}
    with jobs.db.transaction() as session:
        job_id = enqueue(session, "test.broken", {})
        unknown = enqueue(session, "test.unknown_kind", {})
    jobs.run()
    assert _job(jobs, job_id or 0).status == "failed"
    assert _job(jobs, unknown or 0).status == "failed"


def test_expired_lease_is_taken_over_and_the_old_holder_cannot_finish(
    make_jobs: Callable[..., Jobs],
) -> None:
    jobs = make_jobs()
    with jobs.db.transaction() as session:
        job_id = enqueue(session, "test.noop", {})
    now = jobs.clock()
    lease = timedelta(seconds=30)
    held = claim_next(jobs.db, "worker-a", now, lease)
    assert held is not None and held.id == job_id
    assert claim_next(jobs.db, "worker-b", now + timedelta(seconds=29), lease) is None

    taken = claim_next(jobs.db, "worker-b", now + timedelta(seconds=31), lease)
    assert taken is not None and taken.id == job_id and taken.attempt == 2
    assert not mark_done(jobs.db, held, now + timedelta(seconds=32))  # lost its lease
    assert mark_done(jobs.db, taken, now + timedelta(seconds=33))
    job = _job(jobs, job_id or 0)
    assert (job.status, job.locked_by) == ("done", "worker-b#2")


def test_schedules_run_once_per_period_across_workers(make_jobs: Callable[..., Jobs]) -> None:
    jobs = make_jobs()
    start = jobs.clock() + timedelta(hours=1)
    jobs.clock.fixed = start.replace(minute=5, second=0)  # away from an hour's boundary
    ran: list[str] = []
    handlers = {
        "schedule.grace": lambda ctx: ran.append("grace"),
        "schedule.reconcile": lambda ctx: ran.append("reconcile"),
        "schedule.prune": lambda ctx: ran.append("prune"),
    }
    workers = [
        Worker(jobs.settings, jobs.db, clock=jobs.clock, worker_id=f"w{i}", handlers=handlers)
        for i in range(2)
    ]
    for worker in workers:
        worker.tick_schedules()
        worker.run_pending()
    assert sorted(ran) == ["grace", "prune", "reconcile"]
    jobs.advance(minutes=1)
    for worker in workers:
        worker.tick_schedules()
        worker.run_pending()
    assert ran.count("grace") == 2 and ran.count("reconcile") == 1


def test_job_whose_worker_died_on_its_last_attempt_is_parked(
    make_jobs: Callable[..., Jobs],
) -> None:
    jobs = make_jobs()
    with jobs.db.transaction() as session:
        job_id = enqueue(session, "test.noop", {}, max_attempts=1)
    now = jobs.clock()
    lease = timedelta(seconds=30)
    assert claim_next(jobs.db, "worker-a", now, lease) is not None
    assert claim_next(jobs.db, "worker-b", now + timedelta(seconds=31), lease) is None
    job = _job(jobs, job_id or 0)
    assert job.status == "failed"
    assert job.last_error == "worker worker-a#1 stopped during the last attempt"


def test_a_stopping_worker_gives_back_the_jobs_of_its_batch_it_has_not_started(
    make_jobs: Callable[..., Jobs],
) -> None:
    # A batch sized by fast jobs can hold slow ones (PDF rendering): a worker asked to stop
    # finishes the job in hand and gives the others back at once, attempts untouched.
    jobs = make_jobs()
    with jobs.db.transaction() as session:
        ids = [enqueue(session, "test.slow", {"n": n}) for n in range(3)]
    stop = threading.Event()
    ran: list[int] = []

    def slow(ctx: JobContext) -> None:
        ran.append(ctx.job.payload["n"])
        stop.set()  # asked to stop while the first job runs

    worker = Worker(jobs.settings, jobs.db, clock=jobs.clock, handlers={"test.slow": slow})
    assert worker.run_batch(stop=stop) == 3
    assert ran == [0]
    states = [(_job(jobs, i or 0).status, _job(jobs, i or 0).attempts) for i in ids]
    assert states == [("done", 1), ("queued", 0), ("queued", 0)]
    other = Worker(jobs.settings, jobs.db, clock=jobs.clock, handlers={"test.slow": slow})
    assert other.run_batch() == 2 and ran == [0, 1, 2]
