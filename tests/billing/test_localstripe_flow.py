"""End to end with localstripe's own webhooks (API 2017-08-15 shapes, signed by it):
checkout makes the customer, a subscription is created at Stripe, and the events Stripe
sends on its own make the user premium and issue the invoice."""

from __future__ import annotations

import time
from collections.abc import Callable

import stripe

from tests.billing.helpers import invoices, status, transactions
from tests.conftest import WEBHOOK_SECRET, Service
from tests.stripe_peer import StripePeer


def _wait_for(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "Stripe's webhooks never arrived"
        time.sleep(0.2)


def _subscribe(peer: StripePeer, customer: str, price: str, **card: str) -> str:
    client = stripe.StripeClient(
        "sk_test_meterbill", base_addresses={"api": peer.url}, max_network_retries=0
    )
    method = client.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        }
    )
    attached = client.v1.payment_methods.attach(method.id, {"customer": customer})
    client.v1.customers.update(
        customer, {"invoice_settings": {"default_payment_method": attached.id}}
    )
    sub = client.v1.subscriptions.create({"customer": customer, "items": [{"plan": price}]})
    return str(sub.id)


def test_stripe_webhooks_make_the_user_premium(
    stripe_service: Service, stripe_peer: StripePeer
) -> None:
    stripe_peer.register_webhook(f"{stripe_service.url}/api/v1/billing/webhook", WEBHOOK_SECRET)
    try:
        headers = stripe_service.auth("flow-user", email="flow@example.com")
        checkout = stripe_service.client.post(
            "/api/v1/billing/checkout", json={"plan": "premium"}, headers=headers
        )
        assert checkout.status_code == 200
        customer = status(stripe_service, "flow-user")["stripe_customer_id"]
        price = stripe_service.settings.stripe_price_premium or ""
        sub_id = _subscribe(stripe_peer, customer, price)

        _wait_for(lambda: status(stripe_service, "flow-user")["plan"] == "premium")
        _wait_for(lambda: len(invoices(stripe_service)) == 1)
        body = status(stripe_service, "flow-user")
        assert body["stripe_subscription_id"] == sub_id and body["status"] == "active"
        assert body["current_period_end"] is not None
        (invoice,) = invoices(stripe_service)
        assert invoice.amount == 900 and invoice.user_id == "flow-user"
        assert [t.type for t in transactions(stripe_service)] == ["payment"]

        client = stripe.StripeClient(
            "sk_test_meterbill", base_addresses={"api": stripe_peer.url}, max_network_retries=0
        )
        client.v1.subscriptions.cancel(sub_id)
        _wait_for(lambda: status(stripe_service, "flow-user")["status"] == "canceled")
        assert status(stripe_service, "flow-user")["plan"] == "free"
    finally:
        stripe_peer.clear_webhooks()


def test_checkout_completed_reads_the_subscription_from_stripe(
    stripe_service: Service, stripe_peer: StripePeer
) -> None:
    """`checkout.session.completed` says nothing of what was bought (and localstripe never
    sends it: the event is built from Stripe's reference); meterbill asks Stripe for the
    subscription it names."""
    from tests import stripe_events as se

    headers = stripe_service.auth("buyer")
    assert (
        stripe_service.client.post(
            "/api/v1/billing/checkout", json={"plan": "pro"}, headers=headers
        ).status_code
        == 200
    )
    customer = status(stripe_service, "buyer")["stripe_customer_id"]
    sub_id = _subscribe(stripe_peer, customer, stripe_service.settings.stripe_price_pro or "")
    completed = se.event(
        "checkout.session.completed", se.checkout_session(customer, sub_id, "buyer", "pro")
    )
    response = stripe_service.post_event(completed)
    assert response.status_code == 200 and response.json()["outcome"] == "applied"
    body = status(stripe_service, "buyer")
    assert body["plan"] == "pro" and body["stripe_subscription_id"] == sub_id
    assert body["current_period_end"] is not None
