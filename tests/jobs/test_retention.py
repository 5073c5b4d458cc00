"""Pruning: old events and jobs go, but never what a subscription's state is folded from."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from meterbill.auth.service import lock_user
from meterbill.billing.models import BillingEvent, Subscription
from meterbill.jobs.models import Job
from meterbill.jobs.queue import enqueue
from meterbill.jobs.worker import Worker
from tests import stripe_events as se
from tests.conftest import Clock, Service
from tests.jobs.conftest import Jobs


def _events(jobs: Jobs) -> list[str]:
    with jobs.db.reading() as session:
        return sorted(session.scalars(select(BillingEvent.stripe_event_id)))


def _subscriptions(jobs: Jobs) -> dict[str, tuple[str, str, datetime | None]]:
    with jobs.db.reading() as session:
        return {
            s.stripe_subscription_id: (s.status, s.plan, s.current_period_end)
            for s in session.scalars(select(Subscription))
        }


def test_prune_keeps_what_subscriptions_are_folded_from(
    service: Service, make_jobs: Callable[..., Jobs]
) -> None:
    jobs = make_jobs()
    now = datetime.now(UTC).replace(microsecond=0)
    old = now - timedelta(days=200)
    t = int(old.timestamp())
    with jobs.db.transaction() as session:
        lock_user(session, "u1", "u1@example.com")
    service.clock.fixed = old  # everything below was received 200 days ago
    live = se.subscription("sub_live", "cus_1", "price_premium_test", user_id="u1", created=t)
    ended = se.subscription("sub_ended", "cus_1", "price_pro_test", user_id="u1", created=t)
    gone = se.subscription("sub_ended", "cus_1", "price_pro_test", "canceled", created=t + 20)
    events = [
        se.event("customer.subscription.created", live, t, event_id="evt_live_created"),
        se.event("invoice.paid", se.invoice("in_1", "cus_1", "sub_live", created=t + 5),
                 t + 5, event_id="evt_live_paid"),
        se.event("customer.subscription.created", ended, t + 10, event_id="evt_ended_created"),
        se.event("customer.subscription.deleted", gone, t + 20, event_id="evt_ended_deleted"),
        se.event("customer.updated", {"id": "cus_1", "object": "customer"}, t + 30,
                 event_id="evt_customer"),
    ]  # fmt: skip
    for event in events:
        assert service.post_event(event).status_code == 200
    service.clock.fixed = None
    recent = se.event("customer.updated", {"id": "cus_1", "object": "customer"}, event_id="evt_new")
    assert service.post_event(recent).status_code == 200
    before = _subscriptions(jobs)
    with jobs.db.transaction() as session:
        for n, (kind, status, age) in enumerate(
            [("test.noop", "done", 40), ("test.noop", "done", 1), ("test.noop", "failed", 40),
             ("schedule.grace", "done", 2)]
        ):  # fmt: skip
            job_id = enqueue(session, kind, {"n": n})
            job = session.get_one(Job, job_id)
            job.status, job.finished_at = status, now - timedelta(days=age)

    worker = Worker(jobs.settings, jobs.db, clock=Clock(now + timedelta(minutes=1)))
    with jobs.db.transaction() as session:
        enqueue(session, "schedule.prune", {})
    worker.run_pending()

    assert _events(jobs) == [
        "evt_ended_deleted",  # the newest snapshot of an ended subscription stays
        "evt_live_created",
        "evt_live_paid",
        "evt_new",
    ]
    with jobs.db.reading() as session:
        left = sorted((j.payload, j.status) for j in session.scalars(select(Job)))
    assert ('{"n":0}', "done") not in left  # old and done: gone
    assert ('{"n":3}', "done") not in left  # a schedule's run, over a day old: gone
    assert ('{"n":1}', "done") in left and ('{"n":2}', "failed") in left

    # A very late event about the ended subscription does not bring it back, and a new
    # event about the live one folds on top of its kept history.
    late = se.subscription("sub_ended", "cus_1", "price_pro_test", "active", created=t + 15)
    assert service.post_event(se.event("customer.subscription.updated", late, t + 15)).is_success
    paid = se.invoice("in_2", "cus_1", "sub_live", created=t + 40, period_end=t + 99 * 86400)
    assert service.post_event(se.event("invoice.paid", paid, t + 40)).is_success
    after = _subscriptions(jobs)
    assert after["sub_ended"] == before["sub_ended"] == ("canceled", "pro", after["sub_ended"][2])
    assert after["sub_live"][:2] == ("active", "premium")
    assert after["sub_live"][2] == datetime.fromtimestamp(t + 99 * 86400, UTC)
