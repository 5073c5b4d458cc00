"""Plan changes through the subscription a user already pays for (issue 9).

Stripe is the Stripe peer (localstripe plus tests/stripe_peer.py's subscription update with
proration and pending updates, subscription schedules and idempotency keys), reached by
meterbill through the official SDK over HTTP; what a test reads back from the peer is
what Stripe would hold.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import stripe

from tests import stripe_events as se
from tests.conftest import Service
from tests.stripe_peer import StripePeer

CHECKOUT = "/api/v1/billing/checkout"
PLAN = "/api/v1/billing/plan"
CANCEL = "/api/v1/billing/cancel"
STATUS = "/api/v1/billing/status"


@pytest.fixture
def sdk(stripe_peer: StripePeer) -> Iterator[stripe.StripeClient]:
    """The official SDK on the peer: the test's stand-in for Stripe's dashboard."""
    yield stripe.StripeClient(
        "sk_test_meterbill", base_addresses={"api": stripe_peer.url}, max_network_retries=0
    )


def subscribe(
    service: Service, sdk: stripe.StripeClient, user_id: str, plan: str, card: str = "pm_card_visa"
) -> dict[str, Any]:
    """A user paying for `plan` at Stripe, with meterbill told by a signed webhook."""
    customer = sdk.v1.customers.create(params={"metadata": {"user_id": user_id}})
    pm = sdk.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    sdk.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    price = getattr(service.settings, f"stripe_price_{plan}")
    sub = sdk.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"plan": price}],
            "metadata": {"user_id": user_id},
        }
    ).to_dict()
    assert sub["status"] == "active"
    created = se.event("customer.subscription.created", sub, created=int(sub["created"]) - 5)
    assert service.post_event(created).status_code == 200
    assert status(service, user_id)["plan"] == plan
    if card != "pm_card_visa":  # from now on the card is declined
        other = sdk.v1.payment_methods.attach(card, params={"customer": customer.id})
        sdk.v1.customers.update(
            customer.id, params={"invoice_settings": {"default_payment_method": other.id}}
        )
    return sub


def status(service: Service, user_id: str) -> dict[str, Any]:
    response = service.client.get(STATUS, headers=service.auth(user_id))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def peer_get(peer: StripePeer, path: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{peer.url}{path}", params=params, auth=("sk_test_meterbill", ""))
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def price_of(subscription: dict[str, Any]) -> str:
    item = subscription["items"]["data"][0]
    return str((item.get("price") or item["plan"])["id"])


def live_subscriptions(peer: StripePeer, customer: str) -> list[dict[str, Any]]:
    listed = peer_get(peer, "/v1/subscriptions", customer=customer, status="all")["data"]
    return [s for s in listed if s["status"] not in ("canceled", "incomplete_expired")]


def test_checkout_for_another_plan_while_paying_is_409_pointing_to_the_plan_endpoint(
    stripe_service: Service, stripe_peer: StripePeer, sdk: stripe.StripeClient
) -> None:
    subscribe(stripe_service, sdk, "paying", "premium")
    sessions_before = stripe_peer.calls("/v1/checkout/sessions", "POST")
    response = stripe_service.client.post(
        CHECKOUT, json={"plan": "pro"}, headers=stripe_service.auth("paying")
    )
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["code"] == "plan_change_required"
    assert body["details"] == {"method": "POST", "endpoint": PLAN}
    assert stripe_peer.calls("/v1/checkout/sessions", "POST") == sessions_before  # no session
    same = stripe_service.client.post(
        CHECKOUT,
        json={"plan": "premium"},
        headers={**stripe_service.auth("paying"), "Accept-Language": "en"},
    )
    assert same.status_code == 400 and same.json()["code"] == "already_on_plan"


def test_upgrade_changes_the_one_subscription_now_with_a_prorated_invoice(
    stripe_service: Service, stripe_peer: StripePeer, sdk: stripe.StripeClient
) -> None:
    sub = subscribe(stripe_service, sdk, "upper", "premium")
    response = stripe_service.client.post(
        PLAN, json={"plan": "pro"}, headers=stripe_service.auth("upper")
    )
    assert response.status_code == 200, response.text
    assert response.json()["plan"] == "pro" and response.json()["pending_plan"] is None
    at_stripe = peer_get(stripe_peer, f"/v1/subscriptions/{sub['id']}")
    assert price_of(at_stripe) == stripe_service.settings.stripe_price_pro
    assert at_stripe["items"]["data"][0]["id"] == sub["items"]["data"][0]["id"]
    assert [s["id"] for s in live_subscriptions(stripe_peer, sub["customer"])] == [sub["id"]]
    proration = peer_get(stripe_peer, f"/v1/invoices/{at_stripe['latest_invoice']}")
    assert proration["status"] == "paid"
    assert 0 < proration["total"] <= 2900 - 900  # the difference, for what is left of it
    assert status(stripe_service, "upper")["plan"] == "pro"


def test_an_upgrade_whose_payment_fails_grants_nothing(
    stripe_service: Service, stripe_peer: StripePeer, sdk: stripe.StripeClient
) -> None:
    sub = subscribe(stripe_service, sdk, "declined", "premium", card="pm_card_chargeCustomerFail")
    response = stripe_service.client.post(
        PLAN, json={"plan": "pro"}, headers=stripe_service.auth("declined")
    )
    assert response.status_code == 402, response.text
    assert response.json()["code"] == "plan_change_payment_failed"
    at_stripe = peer_get(stripe_peer, f"/v1/subscriptions/{sub['id']}")
    assert at_stripe["pending_update"] is not None
    assert price_of(at_stripe) == stripe_service.settings.stripe_price_premium
    assert status(stripe_service, "declined")["plan"] == "premium"
    again = stripe_service.client.post(
        PLAN, json={"plan": "pro"}, headers=stripe_service.auth("declined")
    )
    assert again.status_code == 402  # no second prorated invoice while one waits
    assert stripe_peer.calls(f"/v1/subscriptions/{sub['id']}", "POST") == 1


def test_downgrade_is_scheduled_for_the_end_of_the_period_and_can_be_taken_back(
    stripe_service: Service, stripe_peer: StripePeer, sdk: stripe.StripeClient
) -> None:
    sub = subscribe(stripe_service, sdk, "lower", "pro")
    response = stripe_service.client.post(
        PLAN, json={"plan": "premium"}, headers=stripe_service.auth("lower")
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["plan"] == "pro"  # paid for until the period's end
    assert body["pending_plan"] == "premium"
    assert body["pending_plan_at"] == body["current_period_end"] is not None
    at_stripe = peer_get(stripe_peer, f"/v1/subscriptions/{sub['id']}")
    assert price_of(at_stripe) == stripe_service.settings.stripe_price_pro
    schedule = peer_get(stripe_peer, f"/v1/subscription_schedules/{at_stripe['schedule']}")
    assert schedule["end_behavior"] == "release"
    phases = [(p["items"][0]["price"], p["start_date"]) for p in schedule["phases"]]
    assert phases == [
        (stripe_service.settings.stripe_price_pro, sub["current_period_start"]),
        (stripe_service.settings.stripe_price_premium, sub["current_period_end"]),
    ]
    assert stripe_peer.calls(f"/v1/subscriptions/{sub['id']}", "POST") == 0  # price unchanged
    assert status(stripe_service, "lower")["pending_plan"] == "premium"
    keep = stripe_service.client.post(
        PLAN, json={"plan": "pro"}, headers=stripe_service.auth("lower")
    )
    assert keep.status_code == 200, keep.text
    assert keep.json()["plan"] == "pro" and keep.json()["pending_plan"] is None
    released = peer_get(stripe_peer, f"/v1/subscription_schedules/{schedule['id']}")
    assert released["status"] == "released"
    same = stripe_service.client.post(
        PLAN, json={"plan": "pro"}, headers=stripe_service.auth("lower")
    )
    assert same.status_code == 400 and same.json()["code"] == "already_on_plan"


def test_a_scheduled_downgrade_applies_when_stripe_says_so(
    stripe_service: Service, stripe_peer: StripePeer, sdk: stripe.StripeClient
) -> None:
    sub = subscribe(stripe_service, sdk, "later", "pro")
    headers = stripe_service.auth("later")
    assert (
        stripe_service.client.post(PLAN, json={"plan": "premium"}, headers=headers).status_code
        == 200
    )
    # The period ends: Stripe moves the subscription to the schedule's next phase.
    renewed = peer_get(stripe_peer, f"/v1/subscriptions/{sub['id']}")
    premium = {"id": stripe_service.settings.stripe_price_premium}
    renewed["items"]["data"][0].update(price=premium, plan=premium)
    updated = se.event("customer.subscription.updated", renewed, created=int(time.time()) + 60)
    assert stripe_service.post_event(updated).status_code == 200
    after = status(stripe_service, "later")
    assert after["plan"] == "premium" and after["pending_plan"] is None


def test_cancel_at_period_end_then_undo(
    stripe_service: Service, stripe_peer: StripePeer, sdk: stripe.StripeClient
) -> None:
    sub = subscribe(stripe_service, sdk, "leaver", "premium")
    headers = stripe_service.auth("leaver")
    canceled = stripe_service.client.post(CANCEL, headers=headers)
    assert canceled.status_code == 200, canceled.text
    body = canceled.json()
    assert body["plan"] == "premium" and body["status"] == "active"
    assert body["cancel_at_period_end"] is True
    assert body["cancel_at"] == body["current_period_end"]
    at_stripe = peer_get(stripe_peer, f"/v1/subscriptions/{sub['id']}")
    assert at_stripe["cancel_at_period_end"] is True and at_stripe["status"] == "active"
    assert status(stripe_service, "leaver")["cancel_at_period_end"] is True
    undone = stripe_service.client.post(f"{CANCEL}/undo", headers=headers)
    assert undone.status_code == 200, undone.text
    assert undone.json()["cancel_at_period_end"] is False and undone.json()["cancel_at"] is None
    assert peer_get(stripe_peer, f"/v1/subscriptions/{sub['id']}")["cancel_at_period_end"] is False
    again = stripe_service.client.post(CANCEL, headers=headers)
    assert again.json()["cancel_at_period_end"] is True
    assert (
        stripe_service.client.delete(CANCEL, headers=headers).json()["cancel_at_period_end"]
        is False
    )


def test_cancel_replaces_a_pending_downgrade(
    stripe_service: Service, stripe_peer: StripePeer, sdk: stripe.StripeClient
) -> None:
    sub = subscribe(stripe_service, sdk, "both", "pro")
    headers = stripe_service.auth("both")
    assert (
        stripe_service.client.post(PLAN, json={"plan": "premium"}, headers=headers).status_code
        == 200
    )
    response = stripe_service.client.post(CANCEL, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["cancel_at_period_end"] is True
    assert response.json()["pending_plan"] is None
    at_stripe = peer_get(stripe_peer, f"/v1/subscriptions/{sub['id']}")
    assert at_stripe["cancel_at_period_end"] is True and not at_stripe.get("schedule")


def test_plan_endpoints_without_a_paid_subscription_point_to_checkout(
    stripe_service: Service,
) -> None:
    headers = stripe_service.auth("nobody")
    for method, path, body in (("POST", PLAN, {"plan": "pro"}), ("POST", CANCEL, None)):
        response = stripe_service.client.request(method, path, json=body, headers=headers)
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "no_paid_subscription"
        assert response.json()["details"]["endpoint"] == CHECKOUT
    bad = stripe_service.client.post(PLAN, json={"plan": "gold"}, headers=headers)
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_plan"


def test_after_the_grace_period_checkout_asks_to_settle_or_cancel_first(
    stripe_service: Service, stripe_peer: StripePeer, sdk: stripe.StripeClient
) -> None:
    sub = subscribe(stripe_service, sdk, "late", "premium")
    failed_at = int(sub["created"])
    invoice = se.invoice("in_late", sub["customer"], sub["id"], paid=False, created=failed_at)
    assert (
        stripe_service.post_event(se.event("invoice.payment_failed", invoice, created=failed_at))
    ).status_code == 200
    grace = stripe_service.settings.grace_days
    stripe_service.clock.fixed = datetime.fromtimestamp(failed_at, UTC) + timedelta(
        days=grace, hours=1
    )
    assert status(stripe_service, "late")["plan"] == "free"
    headers = stripe_service.auth("late")
    response = stripe_service.client.post(CHECKOUT, json={"plan": "premium"}, headers=headers)
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "settle_or_cancel_required"
    assert response.json()["details"]["cancel"] == CANCEL
    assert (
        stripe_service.client.post(PLAN, json={"plan": "pro"}, headers=headers).json()["code"]
        == "settle_or_cancel_required"
    )
    canceled = stripe_service.client.post(CANCEL, headers=headers)  # stops now: not served
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    assert peer_get(stripe_peer, f"/v1/subscriptions/{sub['id']}")["status"] == "canceled"
    again = stripe_service.client.post(CHECKOUT, json={"plan": "premium"}, headers=headers)
    assert again.status_code == 200, again.text


def test_a_retried_upgrade_charges_once(
    make_service: Any, stripe_peer: StripePeer, sdk: stripe.StripeClient, stripe_service: Service
) -> None:
    """The first request times out at meterbill but goes through at Stripe; the retry
    carries the same idempotency key, so Stripe answers it without a second invoice."""
    impatient = make_service(
        stripe_secret_key="sk_test_meterbill",
        stripe_api_base=stripe_peer.url,
        stripe_price_premium=stripe_service.settings.stripe_price_premium,
        stripe_price_pro=stripe_service.settings.stripe_price_pro,
        stripe_timeout_seconds=1.0,
    )
    sub = subscribe(impatient, sdk, "retry", "premium")
    stripe_peer.fail(
        f"/v1/subscriptions/{sub['id']}", status=200, delay=1.5, count=1, method="POST"
    )
    headers = impatient.auth("retry")
    first = impatient.client.post(PLAN, json={"plan": "pro"}, headers=headers)
    assert first.status_code == 503  # meterbill gave up; Stripe did not
    second = impatient.client.post(PLAN, json={"plan": "pro"}, headers=headers)
    assert second.status_code == 200, second.text
    assert second.json()["plan"] == "pro"
    invoices = peer_get(stripe_peer, "/v1/invoices", customer=sub["customer"])["data"]
    prorations = [i for i in invoices if i.get("billing_reason") == "subscription_update"]
    assert len(prorations) == 1


def test_two_upgrades_at_once_charge_once(
    stripe_service: Service, stripe_peer: StripePeer, sdk: stripe.StripeClient
) -> None:
    sub = subscribe(stripe_service, sdk, "twice", "premium")
    stripe_peer.fail(f"/v1/subscriptions/{sub['id']}", status=200, delay=0.5, method="POST")
    headers = stripe_service.auth("twice")

    def upgrade(_: int) -> tuple[int, str | None]:
        response = stripe_service.client.post(PLAN, json={"plan": "pro"}, headers=headers)
        return response.status_code, response.json().get("code")

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(upgrade, range(3)))
    # Each is answered as done, or (if it started after another finished) as already done.
    assert set(answers) <= {(200, None), (400, "already_on_plan")} and (200, None) in answers
    invoices = peer_get(stripe_peer, "/v1/invoices", customer=sub["customer"])["data"]
    assert len([i for i in invoices if i.get("billing_reason") == "subscription_update"]) == 1
    assert status(stripe_service, "twice")["plan"] == "pro"
