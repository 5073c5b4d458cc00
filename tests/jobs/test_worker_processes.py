"""`meterbill worker` as real processes: killed mid-job, several sharing one queue, and the
PDF render child they leave behind (none)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from meterbill.auth.service import lock_user
from meterbill.db import Database
from meterbill.invoicing.documents import RENDER_JOB
from meterbill.jobs.models import Job
from meterbill.jobs.queue import enqueue
from meterbill.notify.service import notify_quota_alert
from meterbill.notify.webhooks import WEBHOOK_DELIVERY, emit_webhook
from tests import stripe_events as se
from tests.conftest import Service
from tests.jobs.conftest import Receiver, SmtpServer, wait_for

Start = Callable[..., subprocess.Popen[bytes]]


def _jobs(db: Database) -> list[Job]:
    with db.reading() as session:
        return list(session.scalars(select(Job).order_by(Job.id)))


def test_worker_killed_mid_job_leaves_it_to_be_completed_once(
    database_url: str, receiver: Receiver, start_worker: Start
) -> None:
    db = Database(database_url)
    with db.transaction() as session:
        emit_webhook(session, "plan.changed", {"user_id": "u1", "new_plan": "free"}, cause="c1")
    receiver.hold_next.set()  # the first delivery hangs: the worker is mid-job
    first = start_worker("worker-a", METERBILL_WEBHOOK_URLS=receiver.url)
    wait_for(lambda: receiver.deliveries, what="the first delivery")
    delivery = next(job for job in _jobs(db) if job.kind == WEBHOOK_DELIVERY)
    assert (delivery.status, delivery.locked_by) == ("running", "worker-a#1")

    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed_at = time.monotonic()
    start_worker("worker-b", METERBILL_WEBHOOK_URLS=receiver.url)

    wait_for(receiver.acknowledged, what="the delivery to be retried")
    # The job stayed with the dead worker until its lease ran out (2 s, extended every
    # third of it, so at least 1.3 s after the kill): never two at once.
    assert time.monotonic() - killed_at >= 1.0
    wait_for(lambda: _jobs(db)[-1].status == "done", what="the job to be marked done")
    assert len(receiver.acknowledged()) == 1
    assert len(receiver.deliveries) == 2  # the one cut short, then the one that completed
    ids = {d.event["id"] for d in receiver.deliveries}
    assert len(ids) == 1  # the same event id: a receiver dedupes the cut-short attempt
    done = _jobs(db)[-1]
    assert (done.status, done.attempts, done.locked_by) == ("done", 2, "worker-b#2")
    time.sleep(0.5)
    assert len(receiver.acknowledged()) == 1
    db.dispose()


def test_worker_killed_while_sending_an_email_sends_it_once_after_restart(
    database_url: str, smtp: SmtpServer, start_worker: Start
) -> None:
    db = Database(database_url)
    with db.transaction() as session:
        lock_user(session, "u1", "u1@example.com")
        notify_quota_alert(session, "u1", "tokens", 100, "2026-11")
    smtp.inbox.hold_next.set()  # the SMTP server stalls the first session
    first = start_worker("worker-a", METERBILL_SMTP_URL=smtp.url)
    wait_for(lambda: smtp.inbox.sessions, what="the first SMTP session")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed_at = time.monotonic()
    start_worker("worker-b", METERBILL_SMTP_URL=smtp.url)

    wait_for(lambda: smtp.messages, what="the email to be sent after the lease")
    assert time.monotonic() - killed_at >= 1.0  # not before the dead worker's lease ran out
    email = next(job for job in _jobs(db) if job.kind == "email.send")
    wait_for(
        lambda: next(j for j in _jobs(db) if j.id == email.id).status == "done",
        what="the email job to be done",
    )
    time.sleep(0.5)
    assert len(smtp.messages) == 1
    assert smtp.messages[0]["Subject"] == "Vous avez utilisé 100 % de votre quota (jetons)"
    assert smtp.inbox.sessions == 2
    done = next(job for job in _jobs(db) if job.id == email.id)
    assert (done.status, done.attempts, done.locked_by) == ("done", 2, "worker-b#2")
    db.dispose()


def test_two_workers_run_each_of_1000_jobs_exactly_once(
    database_url: str, receiver: Receiver, start_worker: Start
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("several workers share a queue on PostgreSQL; SQLite runs one")
    db = Database(database_url)
    with db.transaction() as session:
        for n in range(1000):
            event = {"id": f"evt_{n:04d}", "type": "test.load", "created": 0, "data": {}}
            enqueue(session, WEBHOOK_DELIVERY, {"url": receiver.url, "event": event})
    started = time.monotonic()
    start_worker("worker-a")
    start_worker("worker-b")

    def finished() -> bool:
        with db.reading() as session:
            return session.scalar(select(func.count()).where(Job.status != "done")) == 0

    wait_for(finished, timeout=90, what="1000 jobs")
    elapsed = time.monotonic() - started
    seen = Counter(d.event["id"] for d in receiver.deliveries)
    assert len(seen) == 1000 and set(seen.values()) == {1}
    jobs = _jobs(db)
    assert {job.attempts for job in jobs} == {1}
    by_worker = Counter((job.locked_by or "").split("#")[0] for job in jobs)
    assert set(by_worker) == {"worker-a", "worker-b"}
    print(f"\n1000 jobs, 2 workers: {elapsed:.1f} s, split {dict(by_worker)}")
    db.dispose()


def _children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == pid and fields[0] not in "ZX":
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in "ZX"  # a zombie has exited (waiting for init to reap it)


def _command(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def _worker_with_a_render_child(
    service: Service, start_worker: Start, tmp_path: Path
) -> tuple[subprocess.Popen[bytes], list[int]]:
    """A worker that rendered an invoice's PDF (its `invoice.render` job), and its child
    processes: the render child (and multiprocessing's resource tracker, if it runs)."""
    with service.db.transaction() as session:
        lock_user(session, "user-1").stripe_customer_id = "cus_pdf"
    paid = se.event("invoice.paid", se.invoice("in_pdf", "cus_pdf", None, amount=1080))
    assert service.post_event(paid).status_code == 200
    worker = start_worker("worker-pdf", METERBILL_INVOICE_DIR=str(tmp_path))
    wait_for(lambda: list(tmp_path.glob("**/*.pdf")), timeout=60, what="the PDF")
    children = _children(worker.pid)
    assert sum(b"spawn_main" in _command(pid) for pid in children) == 1  # the render child
    return worker, children


def test_a_stopped_worker_stops_its_pdf_render_child(
    make_service: Callable[..., Service], start_worker: Start, tmp_path: Path
) -> None:
    service = make_service(invoice_dir=tmp_path)
    worker, children = _worker_with_a_render_child(service, start_worker, tmp_path)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    wait_for(lambda: not any(map(_alive, children)), timeout=5, what="the children to exit")


def test_a_killed_workers_pdf_render_child_exits_by_itself(
    make_service: Callable[..., Service], start_worker: Start, tmp_path: Path
) -> None:
    service = make_service(invoice_dir=tmp_path)
    worker, children = _worker_with_a_render_child(service, start_worker, tmp_path)
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    # Nobody stops the render child: it sees its parent gone (its pipe closes).
    wait_for(lambda: not any(map(_alive, children)), timeout=5, what="the orphans to exit")


def test_a_workers_render_child_killed_while_idle_fails_no_job(
    make_service: Callable[..., Service], start_worker: Start, tmp_path: Path
) -> None:
    service = make_service(invoice_dir=tmp_path)
    worker, children = _worker_with_a_render_child(service, start_worker, tmp_path)
    [child] = [pid for pid in children if b"spawn_main" in _command(pid)]
    os.kill(child, signal.SIGKILL)  # as the kernel's out-of-memory killer would

    paid = se.event("invoice.paid", se.invoice("in_pdf_2", "cus_pdf", None, amount=2160))
    assert service.post_event(paid).status_code == 200

    # Rendered by a new child at the first attempt (a failed one would come back in 10 s).
    def renders() -> list[Job]:
        return [job for job in _jobs(service.db) if job.kind == RENDER_JOB]

    wait_for(lambda: [job.status for job in renders()] == ["done"] * 2, timeout=30, what="PDFs")
    assert [(job.attempts, job.last_error) for job in renders()] == [(1, None), (1, None)]
    assert len(list(tmp_path.glob("**/*.pdf"))) == 2
    assert not _alive(child) and worker.poll() is None
