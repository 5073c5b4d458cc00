"""Defence in depth: should a second live subscription appear beside the first (two sessions
paid in the same second), the webhook revealing it cancels it at Stripe and refunds what it
charged, once; the user stays on the first plan."""

from __future__ import annotations

import json
from typing import Any

import httpx
import stripe
from sqlalchemy import select

from meterbill.billing.duplicates import DUPLICATE_EVENT, users_with_duplicates
from meterbill.billing.gateway import StripeGateway
from meterbill.billing.models import BillingEvent
from meterbill.billing.service import link_customer
from meterbill.config import load_catalog
from meterbill.jobs.handlers import HANDLERS
from meterbill.jobs.models import Job
from meterbill.jobs.queue import ClaimedJob
from meterbill.jobs.worker import JobContext
from meterbill.notify.webhooks import WEBHOOK_EVENT
from tests import stripe_events as se
from tests.billing.helpers import status, ts
from tests.conftest import Service
from tests.stripe_peer import StripePeer

KEY = ("sk_test_meterbill", "")


def _client(peer: StripePeer) -> stripe.StripeClient:
    return stripe.StripeClient(KEY[0], base_addresses={"api": peer.url}, max_network_retries=0)


def _paid_session(service: Service, peer: StripePeer, customer: str, plan: str) -> dict[str, Any]:
    """A session made and paid at Stripe, as by a request that raced the other one."""
    price = getattr(service.settings, f"stripe_price_{plan}")
    metadata = {"user_id": "ivy", "plan": plan}
    session = _client(peer).v1.checkout.sessions.create(
        {
            "customer": customer,
            "mode": "subscription",
            "line_items": [{"price": price, "quantity": 1}],
            "success_url": "https://app.example/ok",
            "metadata": metadata,
            "subscription_data": {"metadata": metadata},
        }
    )
    paid = peer.complete_checkout(session.id)
    assert paid.status_code == 200, paid.text
    return paid.json()  # type: ignore[no-any-return]


def _completed(service: Service, session: dict[str, Any]) -> httpx.Response:
    return service.post_event(se.event("checkout.session.completed", session))


def _refunds(peer: StripePeer, payment_intent: str) -> list[dict[str, Any]]:
    intent = _client(peer).v1.payment_intents.retrieve(payment_intent).to_dict()
    charge = intent.get("latest_charge")
    refunds = [r.to_dict() for r in _client(peer).v1.refunds.list({"limit": 100}).data]
    return [
        r
        for r in refunds
        if r.get("payment_intent") == payment_intent or (charge and r.get("charge") == charge)
    ]


def _duplicate_records(service: Service) -> list[dict[str, Any]]:
    with service.db.reading() as session:
        rows = session.scalars(
            select(BillingEvent.payload).where(BillingEvent.event_type == DUPLICATE_EVENT)
        ).all()
    return [json.loads(row or "{}") for row in rows]


def _plan_changes(service: Service, user_id: str = "ivy") -> list[tuple[str, str]]:
    """The `plan.changed` webhooks enqueued for the SaaS's backend about the user, in order."""
    with service.db.reading() as session:
        payloads = session.scalars(
            select(Job.payload).where(Job.kind == WEBHOOK_EVENT).order_by(Job.id)
        ).all()
    events = [json.loads(payload) for payload in payloads]
    return [
        (e["data"]["old_plan"], e["data"]["new_plan"])
        for e in events
        if e["type"] == "plan.changed" and e["data"]["user_id"] == user_id
    ]


def _customer(service: Service, peer: StripePeer) -> str:
    customer = _client(peer).v1.customers.create({"metadata": {"user_id": "ivy"}}).id
    link_customer(service.db, "ivy", None, customer)
    return customer


def test_a_second_subscription_is_canceled_and_refunded_once(
    stripe_service: Service, stripe_peer: StripePeer
) -> None:
    customer = _customer(stripe_service, stripe_peer)
    first = _paid_session(stripe_service, stripe_peer, customer, "premium")
    second = _paid_session(stripe_service, stripe_peer, customer, "pro")
    assert _completed(stripe_service, first).json()["outcome"] == "applied"
    assert status(stripe_service, "ivy")["plan"] == "premium"

    event = se.event("checkout.session.completed", second)
    response = stripe_service.post_event(event)
    assert response.status_code == 200 and response.json()["outcome"] == "applied"

    client = _client(stripe_peer)
    assert client.v1.subscriptions.retrieve(first["subscription"]).status == "active"
    assert client.v1.subscriptions.retrieve(second["subscription"]).status == "canceled"
    invoice = client.v1.invoices.retrieve(second["invoice"])
    (refund,) = _refunds(stripe_peer, str(invoice.payment_intent))
    assert refund["amount"] == 2900 and refund["status"] == "succeeded"
    body = status(stripe_service, "ivy")
    assert body["plan"] == "premium" and body["stripe_subscription_id"] == first["subscription"]
    assert _duplicate_records(stripe_service) == [
        {
            "kept": first["subscription"],
            "canceled": second["subscription"],
            "refund": refund["id"],
            "refunded_amount": 2900,
            "currency": "eur",
        }
    ]
    # Stripe delivers it again, and the subscription's own event arrives: nothing more.
    assert stripe_service.post_event(event).json()["outcome"] == "duplicate"
    sub = client.v1.subscriptions.retrieve(second["subscription"]).to_dict()
    again = stripe_service.post_event(se.event("customer.subscription.created", sub))
    assert again.status_code == 200
    assert len(_refunds(stripe_peer, str(invoice.payment_intent))) == 1
    assert users_with_duplicates(stripe_service.db) == []
    # The SaaS's backend heard of one change only: the user never left premium.
    assert _plan_changes(stripe_service) == [("free", "premium")]


def test_a_newer_duplicate_never_changes_the_plan_the_older_one_pays_for(
    service: Service,
) -> None:
    """The plan is decided by the subscription the user keeps (the oldest paying one), not
    by the newer one about to be canceled: no upgrade, then downgrade, for nothing."""
    premium = se.subscription(
        "sub_kept", "cus_ivy", "price_premium_test", user_id="ivy", created=ts(-120)
    )
    assert service.post_event(
        se.event("customer.subscription.created", premium, ts(-120))
    ).is_success
    assert status(service, "ivy")["plan"] == "premium"

    pro = se.subscription("sub_dup", "cus_ivy", "price_pro_test", user_id="ivy", created=ts(-60))
    created = service.post_event(se.event("customer.subscription.created", pro, ts(-60)))
    assert created.status_code == 200 and created.json()["outcome"] == "applied"
    body = status(service, "ivy")
    assert body["plan"] == "premium" and body["stripe_subscription_id"] == "sub_kept"
    assert users_with_duplicates(service.db) == ["ivy"]  # Stripe not configured: not canceled
    assert _plan_changes(service) == [("free", "premium")]

    canceled = se.subscription(
        "sub_dup", "cus_ivy", "price_pro_test", "canceled", user_id="ivy", created=ts(-60)
    )
    deleted = service.post_event(se.event("customer.subscription.deleted", canceled, ts()))
    assert deleted.status_code == 200 and deleted.json()["outcome"] == "applied"
    body = status(service, "ivy")
    assert body["plan"] == "premium" and body["stripe_subscription_id"] == "sub_kept"
    assert users_with_duplicates(service.db) == []
    assert _plan_changes(service) == [("free", "premium")]


def _two_live(service: Service, peer: StripePeer) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two paid sessions recorded; Stripe failed to cancel the second when its event came."""
    customer = _customer(service, peer)
    first = _paid_session(service, peer, customer, "premium")
    second = _paid_session(service, peer, customer, "pro")
    assert _completed(service, first).status_code == 200
    peer.fail(f"/v1/subscriptions/{second['subscription']}", status=500, method="DELETE")
    response = _completed(service, second)
    assert response.status_code == 200 and response.json()["outcome"] == "applied"
    peer.clear_failures()
    return first, second


def _run_schedule(service: Service) -> int:
    """The worker's `duplicates` schedule, run once."""
    settings = service.settings
    job = ClaimedJob(0, "schedule.duplicates", {}, None, 1, 1, "test")
    context = JobContext(
        service.db, settings, load_catalog(settings), StripeGateway(settings), job, service.clock()
    )
    return int(HANDLERS["schedule.duplicates"](context))


def test_a_stripe_failure_leaves_the_event_applied_and_the_schedule_cancels_later(
    stripe_service: Service, stripe_peer: StripePeer
) -> None:
    _, second = _two_live(stripe_service, stripe_peer)
    assert users_with_duplicates(stripe_service.db) == ["ivy"]
    assert _run_schedule(stripe_service) == 1
    subscription = _client(stripe_peer).v1.subscriptions.retrieve(second["subscription"])
    assert subscription.status == "canceled"
    assert status(stripe_service, "ivy")["plan"] == "premium"
    assert users_with_duplicates(stripe_service.db) == []
    assert _run_schedule(stripe_service) == 0


def test_a_duplicate_already_ended_at_stripe_is_recorded_not_refunded(
    stripe_service: Service, stripe_peer: StripePeer
) -> None:
    """Its cancellation's event lost: Stripe's answer is recorded, nothing is refunded."""
    _, second = _two_live(stripe_service, stripe_peer)
    _client(stripe_peer).v1.subscriptions.cancel(second["subscription"])  # no webhook sent
    assert _run_schedule(stripe_service) == 0
    assert users_with_duplicates(stripe_service.db) == []
    invoice = _client(stripe_peer).v1.invoices.retrieve(second["invoice"])
    assert _refunds(stripe_peer, str(invoice.payment_intent)) == []
    assert status(stripe_service, "ivy")["plan"] == "premium"


def test_canceling_while_a_duplicate_awaits_cancellation_stops_the_kept_subscription(
    stripe_service: Service, stripe_peer: StripePeer
) -> None:
    """The user cancels before the schedule has canceled the duplicate: the subscription
    that bills them on (the kept one) stops at the period's end, not the duplicate."""
    first, second = _two_live(stripe_service, stripe_peer)
    answer = stripe_service.client.post(
        "/api/v1/billing/cancel", headers=stripe_service.auth("ivy")
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["stripe_subscription_id"] == first["subscription"]
    assert body["plan"] == "premium" and body["cancel_at_period_end"] is True
    client = _client(stripe_peer)
    assert client.v1.subscriptions.retrieve(first["subscription"]).cancel_at_period_end is True
    assert client.v1.subscriptions.retrieve(second["subscription"]).cancel_at_period_end is False
