"""Webhooks to the SaaS's backend: signed like Stripe's, verified by the client helper,
retried per receiver, one id per event."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from sqlalchemy import select

from meterbill.auth.service import lock_user
from meterbill.client.webhooks import WebhookVerificationError, verify_webhook
from meterbill.jobs.models import Job
from meterbill.notify.webhooks import WEBHOOK_DELIVERY, emit_webhook, signature_header
from tests import stripe_events as se
from tests.conftest import Service
from tests.jobs.conftest import WEBHOOK_SECRET, Jobs, Receiver


def test_delivery_is_signed_and_the_client_helper_verifies_it(
    make_jobs: Callable[..., Jobs], receiver: Receiver
) -> None:
    jobs = make_jobs(webhook_urls=receiver.url)
    with jobs.db.transaction() as session:
        emit_webhook(session, "quota.alert", {"user_id": "u1", "level": 80}, cause="u1:80")
        emit_webhook(session, "quota.alert", {"user_id": "u1", "level": 80}, cause="u1:80")
    jobs.run()
    [delivery] = receiver.acknowledged()
    header = delivery.headers["meterbill-signature"]
    assert header.startswith("t=") and ",v1=" in header

    event = verify_webhook(delivery.body, header, WEBHOOK_SECRET)
    assert event["type"] == "quota.alert" and event["data"] == {"user_id": "u1", "level": 80}
    assert event["id"].startswith("evt_") and delivery.headers["meterbill-event-id"] == event["id"]

    with pytest.raises(WebhookVerificationError):
        verify_webhook(delivery.body.replace(b"80", b"99"), header, WEBHOOK_SECRET)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(delivery.body, header, "another_secret")
    with pytest.raises(WebhookVerificationError):
        verify_webhook(delivery.body, None, WEBHOOK_SECRET)
    with pytest.raises(WebhookVerificationError):  # a replay ten minutes later
        verify_webhook(delivery.body, header, WEBHOOK_SECRET, now=time.time() + 600)


def test_client_helper_accepts_any_matching_signature_during_rotation() -> None:
    body = json.dumps({"id": "evt_1", "type": "plan.changed", "data": {}}).encode()
    now = int(time.time())
    new = signature_header(body, "new_secret", now)
    old = signature_header(body, "old_secret", now).split(",")[1]
    assert verify_webhook(body, f"{new},{old}", "old_secret")["id"] == "evt_1"
    assert verify_webhook(body.decode(), new, "new_secret")["id"] == "evt_1"


def test_failing_receiver_is_retried_without_resending_to_the_others(
    make_jobs: Callable[..., Jobs], receiver: Receiver
) -> None:
    down = Receiver()
    down.status = 503
    try:
        jobs = make_jobs(webhook_urls=f"{receiver.url}, {down.url}")
        with jobs.db.transaction() as session:
            emit_webhook(session, "invoice.issued", {"invoice_id": 1}, cause="1")
        jobs.run()
        assert len(receiver.acknowledged()) == 1 and len(down.deliveries) == 1
        with jobs.db.reading() as session:
            failing = session.scalars(
                select(Job).where(Job.kind == WEBHOOK_DELIVERY, Job.status == "queued")
            ).one()
        assert failing.last_error and "HTTP 503" in failing.last_error

        down.status = 200
        jobs.advance(seconds=15)
        jobs.run()
        assert len(receiver.acknowledged()) == 1  # not sent again
        assert len(down.acknowledged()) == 1
        ids = {d.event["id"] for d in receiver.deliveries + down.deliveries}
        assert len(ids) == 1
    finally:
        down.stop()


def test_without_a_secret_nothing_is_sent_unsigned(
    make_jobs: Callable[..., Jobs], receiver: Receiver
) -> None:
    jobs = make_jobs(webhook_urls=receiver.url, webhook_secret="")
    with jobs.db.transaction() as session:
        emit_webhook(session, "plan.changed", {"user_id": "u1"})
    jobs.run()
    assert receiver.deliveries == []
    with jobs.db.reading() as session:
        parked = session.scalars(select(Job).where(Job.kind == WEBHOOK_DELIVERY)).one()
    assert parked.status == "failed" and "METERBILL_WEBHOOK_SECRET" in (parked.last_error or "")


def test_stripe_events_become_plan_changed_and_payment_failed_webhooks(
    service: Service, make_jobs: Callable[..., Jobs], receiver: Receiver
) -> None:
    jobs = make_jobs(webhook_urls=receiver.url)
    with jobs.db.transaction() as session:
        lock_user(session, "u1", "u1@example.com")
    now = int(time.time())
    sub = se.subscription("sub_1", "cus_1", "price_premium_test", user_id="u1", created=now - 60)
    assert service.post_event(se.event("customer.subscription.created", sub, now - 60)).is_success
    failed = se.invoice("in_1", "cus_1", "sub_1", paid=False, created=now - 30)
    assert service.post_event(se.event("invoice.payment_failed", failed, now - 30)).is_success
    canceled = se.subscription("sub_1", "cus_1", "price_premium_test", "canceled", created=now)
    assert service.post_event(se.event("customer.subscription.deleted", canceled, now)).is_success
    jobs.run()
    events = [
        verify_webhook(d.body, d.headers["meterbill-signature"], WEBHOOK_SECRET)
        for d in receiver.acknowledged()
    ]
    summary = sorted(
        (e["type"], e["data"].get("old_plan"), e["data"].get("new_plan")) for e in events
    )
    assert summary == [
        ("payment.failed", None, None),
        ("plan.changed", "free", "premium"),
        ("plan.changed", "premium", "free"),
    ]
    [payment] = [e for e in events if e["type"] == "payment.failed"]
    assert payment["data"]["user_id"] == "u1" and payment["data"]["grace_period_end"]
