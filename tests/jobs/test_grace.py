"""Grace periods that end: the worker's schedule downgrades the user in the database and
tells them, once — with the clock moved, not slept."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from meterbill.auth.models import User
from meterbill.auth.service import lock_user
from meterbill.billing.grace import expire_grace_periods
from meterbill.billing.models import Subscription
from meterbill.jobs.models import Job
from meterbill.jobs.worker import SCHEDULES, Worker
from tests import stripe_events as se
from tests.conftest import Clock, Service
from tests.jobs.conftest import WEBHOOK_SECRET, Jobs, Receiver, SmtpServer


def _subscribe_and_fail(service: Service, user_id: str, failed_at: datetime) -> None:
    start = int((failed_at - timedelta(days=10)).timestamp())
    sub = se.subscription(
        f"sub_{user_id}", f"cus_{user_id}", "price_premium_test", user_id=user_id, created=start
    )
    failed = se.invoice(
        f"in_{user_id}", f"cus_{user_id}", f"sub_{user_id}", paid=False,
        created=int(failed_at.timestamp()),
    )  # fmt: skip
    assert service.post_event(se.event("customer.subscription.created", sub, start)).is_success
    assert service.post_event(
        se.event("invoice.payment_failed", failed, int(failed_at.timestamp()))
    ).is_success


def _user(jobs: Jobs, user_id: str) -> User:
    with jobs.db.reading() as session:
        return session.get_one(User, user_id)


def _kinds(jobs: Jobs) -> list[str]:
    with jobs.db.reading() as session:
        return sorted(job.kind for job in session.scalars(select(Job)))


def _email_templates(jobs: Jobs) -> list[str]:
    with jobs.db.reading() as session:
        jobs_ = session.scalars(select(Job).where(Job.kind == "email.send"))
        return sorted(json.loads(job.payload)["template"] for job in jobs_)


def test_worker_ends_a_grace_period_once_and_tells_the_user(
    service: Service,
    make_jobs: Callable[..., Jobs],
    smtp: SmtpServer,
    receiver: Receiver,
) -> None:
    failed_at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    jobs = make_jobs(smtp_url=smtp.url, webhook_urls=receiver.url)
    with jobs.db.transaction() as session:
        lock_user(session, "u-en", "u-en@example.com").locale = "en"
    _subscribe_and_fail(service, "u-en", failed_at)
    jobs.run()  # the payment-failed email and webhook
    assert [m["Subject"] for m in smtp.messages] == ["Your payment failed"]
    assert _user(jobs, "u-en").plan == "premium"

    clock = Clock(failed_at + timedelta(days=2, hours=23))
    worker = Worker(jobs.settings, jobs.db, clock=clock, schedules=SCHEDULES)
    worker.tick_schedules()
    worker.run_pending()
    assert _user(jobs, "u-en").plan == "premium"  # still in its grace period
    service.clock.fixed = clock()
    assert (
        service.client.get("/api/v1/billing/status", headers=service.auth("u-en")).json()["plan"]
        == "premium"
    )

    clock.fixed = failed_at + timedelta(days=3, minutes=1)
    worker.tick_schedules()
    worker.run_pending()
    worker.run_pending()  # the fan-out's deliveries
    assert _user(jobs, "u-en").plan == "free"
    with jobs.db.reading() as session:
        sub = session.scalars(select(Subscription)).one()
    assert sub.status == "past_due"  # Stripe's word stands; the plan is what changed
    assert sub.grace_expired_for == failed_at + timedelta(days=3)
    service.clock.fixed = clock()
    status = service.client.get("/api/v1/billing/status", headers=service.auth("u-en")).json()
    assert status["plan"] == "free"

    assert [m["Subject"] for m in smtp.messages] == [
        "Your payment failed",
        "Your premium subscription is suspended",
    ]
    body = str(smtp.messages[1].get_body(("plain",)).get_content())
    assert "ended on" in body and "back on the free plan" in body
    from meterbill.client.webhooks import verify_webhook

    types = sorted(
        verify_webhook(d.body, d.headers["meterbill-signature"], WEBHOOK_SECRET)["type"]
        for d in receiver.acknowledged()
    )
    assert types == [
        "payment.failed",
        "plan.changed",
        "plan.changed",
        "subscription.grace_ended",
    ]

    # A minute later the schedule runs again: nothing more to do, nothing sent twice.
    before = _kinds(jobs)
    clock.fixed = clock() + timedelta(minutes=1)
    worker.tick_schedules()
    worker.run_pending()
    assert len(smtp.messages) == 2
    assert [k for k in _kinds(jobs) if not k.startswith("schedule.")] == [
        k for k in before if not k.startswith("schedule.")
    ]
    assert expire_grace_periods(jobs.db, clock() + timedelta(days=1)) == 0


def test_a_paid_invoice_during_grace_means_no_downgrade(
    service: Service, make_jobs: Callable[..., Jobs]
) -> None:
    failed_at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    jobs = make_jobs()
    with jobs.db.transaction() as session:
        lock_user(session, "u1", "u1@example.com")
    _subscribe_and_fail(service, "u1", failed_at)
    paid = se.invoice("in_ok", "cus_u1", "sub_u1", created=int(failed_at.timestamp()) + 60)
    assert service.post_event(
        se.event("invoice.paid", paid, int(failed_at.timestamp()) + 60)
    ).is_success
    assert expire_grace_periods(jobs.db, failed_at + timedelta(days=4)) == 0
    assert _user(jobs, "u1").plan == "premium"
    # the failure itself was told, once, then the invoice; no downgrade notice
    assert _email_templates(jobs) == ["invoice_issued", "payment_failed"]
