"""Checkout and portal through the official SDK against the Stripe peer.

localstripe has no Checkout Sessions nor billing portal: tests/stripe_peer.py serves them
beside localstripe as Stripe's API reference documents, over real HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import select

from meterbill.auth.models import User
from tests.conftest import Service
from tests.stripe_peer import INJECTED_FAILURE_MESSAGE, StripePeer

CHECKOUT = "/api/v1/billing/checkout"
PORTAL = "/api/v1/billing/portal"


def _customer_ids(service: Service) -> list[str | None]:
    with service.db.reading() as session:
        return list(session.scalars(select(User.stripe_customer_id)))


def test_checkout_answers_the_seed_fields(stripe_service: Service, stripe_peer: StripePeer) -> None:
    response = stripe_service.client.post(
        CHECKOUT, json={"plan": "premium"}, headers=stripe_service.auth("alice", email="a@x.fr")
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"checkout_url", "session_id", "plan", "publishable_key"}
    assert body["plan"] == "premium" and body["publishable_key"] == "pk_test_meterbill"
    assert body["session_id"].startswith("cs_") and body["checkout_url"].startswith("https://")
    session = httpx.get(
        f"{stripe_peer.url}/v1/checkout/sessions/{body['session_id']}",
        auth=("sk_test_meterbill", ""),
    ).json()
    customer_id = _customer_ids(stripe_service)[0]
    assert session["customer"] == customer_id and customer_id.startswith("cus_")
    price = stripe_service.settings.stripe_price_premium
    assert session["metadata"] == {"user_id": "alice", "plan": "premium", "price": price}
    customer = httpx.get(
        f"{stripe_peer.url}/v1/customers/{customer_id}", auth=("sk_test_meterbill", "")
    ).json()
    assert customer["email"] == "a@x.fr" and customer["metadata"]["user_id"] == "alice"


def test_a_second_checkout_reuses_the_customer(
    stripe_service: Service, stripe_peer: StripePeer
) -> None:
    for plan in ("premium", "pro"):
        response = stripe_service.client.post(
            CHECKOUT, json={"plan": plan}, headers=stripe_service.auth("bob")
        )
        assert response.status_code == 200
    assert stripe_peer.calls("/v1/customers", "POST") == 1


def test_two_checkouts_at_once_make_one_customer(
    stripe_service: Service, stripe_peer: StripePeer
) -> None:
    stripe_peer.fail("/v1/customers", status=200, delay=0.5)  # slow, so the calls overlap
    headers = stripe_service.auth("carol")

    def checkout(_: int) -> int:
        return stripe_service.client.post(
            CHECKOUT, json={"plan": "pro"}, headers=headers
        ).status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(checkout, range(4)))
    assert statuses == [200] * 4
    # Stripe is called outside the database lock, so each request may ask; the customer's
    # idempotency key makes Stripe answer them all with one customer.
    customers = httpx.get(
        f"{stripe_peer.url}/v1/customers", params={"limit": 100}, auth=("sk_test_meterbill", "")
    ).json()["data"]
    assert [c["metadata"]["user_id"] for c in customers] == ["carol"]
    assert {c for c in _customer_ids(stripe_service) if c} == {customers[0]["id"]}


def test_bad_plans_get_400(stripe_service: Service) -> None:
    for body in ({"plan": "gold"}, {"plan": "free"}, {}, {"plan": 3}):
        response = stripe_service.client.post(CHECKOUT, json=body, headers=stripe_service.auth())
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_plan"
    garbage = stripe_service.client.post(
        CHECKOUT, content=b"{not json", headers=stripe_service.auth()
    )
    assert garbage.status_code == 400


def test_stripe_not_configured_or_price_missing_is_503(
    make_service: Callable[..., Service],
) -> None:
    no_stripe = make_service()
    response = no_stripe.client.post(CHECKOUT, json={"plan": "pro"}, headers=no_stripe.auth())
    assert response.status_code == 503 and response.json()["code"] == "stripe_not_configured"
    no_price = make_service(stripe_secret_key="sk_test_x", stripe_price_pro="")
    response = no_price.client.post(CHECKOUT, json={"plan": "pro"}, headers=no_price.auth())
    assert response.status_code == 503 and response.json()["code"] == "price_not_configured"


def test_stripe_failure_is_a_clean_503_without_stripe_text(
    stripe_service: Service, stripe_peer: StripePeer
) -> None:
    stripe_peer.fail("/v1/customers", status=500)
    response = stripe_service.client.post(
        CHECKOUT, json={"plan": "premium"}, headers=stripe_service.auth("dave")
    )
    assert response.status_code == 503
    assert response.json() == {"error": "Erreur Stripe", "code": "stripe_unavailable"}
    assert INJECTED_FAILURE_MESSAGE not in response.text and "SECRET" not in response.text
    assert _customer_ids(stripe_service) in ([None], [])  # nothing half-written
    stripe_peer.clear_failures()
    stripe_peer.fail("/v1/checkout/sessions", status=400)
    response = stripe_service.client.post(
        CHECKOUT, json={"plan": "premium"}, headers=stripe_service.auth("dave")
    )
    assert response.status_code == 503 and "SECRET" not in response.text


def test_stripe_timeout_and_unreachable_are_503(
    make_service: Callable[..., Service], stripe_peer: StripePeer
) -> None:
    stripe_peer.reset()
    slow = make_service(
        stripe_secret_key="sk_test_x", stripe_api_base=stripe_peer.url, stripe_timeout_seconds=0.3
    )
    stripe_peer.fail("/v1/customers", status=500, delay=2.0)
    response = slow.client.post(CHECKOUT, json={"plan": "premium"}, headers=slow.auth())
    assert response.status_code == 503 and response.json()["code"] == "stripe_unavailable"
    stripe_peer.clear_failures()
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    down = make_service(stripe_secret_key="sk_test_x", stripe_api_base=f"http://127.0.0.1:{closed}")
    response = down.client.post(CHECKOUT, json={"plan": "premium"}, headers=down.auth())
    assert response.status_code == 503 and response.json()["code"] == "stripe_unavailable"


def test_portal_needs_a_customer_then_answers_a_url(stripe_service: Service) -> None:
    headers = stripe_service.auth("erin")
    first = stripe_service.client.post(PORTAL, headers=headers)
    assert first.status_code == 400 and first.json()["code"] == "no_stripe_customer"
    assert (
        stripe_service.client.post(CHECKOUT, json={"plan": "pro"}, headers=headers).status_code
        == 200
    )
    portal = stripe_service.client.post(PORTAL, headers=headers)
    assert portal.status_code == 200
    assert portal.json()["portal_url"].startswith("https://billing.stripe.com/")


def test_checkout_for_the_plan_in_effect_is_400(stripe_service: Service) -> None:
    from tests import stripe_events as se

    headers = stripe_service.auth("paying")
    assert (
        stripe_service.client.post(CHECKOUT, json={"plan": "premium"}, headers=headers).status_code
        == 200
    )
    customer = _customer_ids(stripe_service)[0] or ""
    price = stripe_service.settings.stripe_price_premium or ""
    stripe_service.post_event(
        se.event("customer.subscription.created", se.subscription("sub_p", customer, price))
    )
    same = stripe_service.client.post(
        CHECKOUT, json={"plan": "premium"}, headers=stripe_service.auth("paying")
    )
    assert same.status_code == 400 and same.json()["code"] == "already_on_plan"
    assert same.json()["error"] == "Vous êtes déjà sur le plan premium"
    other = stripe_service.client.post(
        CHECKOUT, json={"plan": "pro"}, headers=stripe_service.auth("paying")
    )
    # Another plan goes through the subscription already paid for, not a second one.
    assert other.status_code == 409 and other.json()["code"] == "plan_change_required"


def test_portal_without_stripe_is_503(make_service: Callable[..., Service]) -> None:
    service = make_service()
    response = service.client.post(PORTAL, headers=service.auth())
    assert response.status_code == 503 and response.json()["code"] == "stripe_not_configured"
