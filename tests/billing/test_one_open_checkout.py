"""A user has at most one Checkout Session open at Stripe, so two subscriptions cannot both
be paid: each checkout expires the user's other open sessions first (counted at the peer),
a paid session answers 409 instead of a second session, and a subscription awaiting its
first payment or paused blocks a new checkout."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests import stripe_events as se
from tests.billing.helpers import status
from tests.conftest import Service
from tests.stripe_peer import StripePeer

CHECKOUT = "/api/v1/billing/checkout"
KEY = ("sk_test_meterbill", "")


def _checkout(service: Service, user: str, plan: str) -> httpx.Response:
    return service.client.post(CHECKOUT, json={"plan": plan}, headers=service.auth(user))


def _session(peer: StripePeer, session_id: str) -> dict[str, Any]:
    response = httpx.get(f"{peer.url}/v1/checkout/sessions/{session_id}", auth=KEY)
    return response.json()  # type: ignore[no-any-return]


def _open_sessions(peer: StripePeer, customer: str) -> list[str]:
    page = httpx.get(
        f"{peer.url}/v1/checkout/sessions",
        params={"customer": customer, "status": "open", "limit": 100},
        auth=KEY,
    ).json()
    return [session["id"] for session in page["data"]]


def _sessions_created(peer: StripePeer) -> int:
    """POST /v1/checkout/sessions exactly (the peer counts by path prefix)."""
    every = peer.calls("/v1/checkout/sessions", "POST")
    return every - peer.calls("/v1/checkout/sessions/", "POST")


def _live_subscriptions(peer: StripePeer, customer: str) -> list[str]:
    page = httpx.get(f"{peer.url}/v1/subscriptions", params={"customer": customer}, auth=KEY).json()
    return [sub["id"] for sub in page["data"] if sub["status"] not in ("canceled",)]


def test_a_checkout_for_another_plan_expires_the_first_session(
    stripe_service: Service, stripe_peer: StripePeer
) -> None:
    first = _checkout(stripe_service, "ann", "premium")
    assert first.status_code == 200, first.text
    second = _checkout(stripe_service, "ann", "pro")
    assert second.status_code == 200, second.text
    premium, pro = first.json()["session_id"], second.json()["session_id"]
    assert premium != pro
    assert stripe_peer.calls(f"/v1/checkout/sessions/{premium}/expire", "POST") == 1
    assert _session(stripe_peer, premium)["status"] == "expired"
    customer = status(stripe_service, "ann")["stripe_customer_id"]
    assert _open_sessions(stripe_peer, customer) == [pro]
    # The abandoned premium page can no longer be paid; the pro one can, once.
    assert stripe_peer.complete_checkout(premium).status_code == 400
    assert stripe_peer.complete_checkout(pro).status_code == 200
    assert len(_live_subscriptions(stripe_peer, customer)) == 1


def test_asking_again_for_the_same_plan_answers_the_same_open_session(
    stripe_service: Service, stripe_peer: StripePeer
) -> None:
    first = _checkout(stripe_service, "ben", "premium").json()["session_id"]
    again = _checkout(stripe_service, "ben", "premium").json()["session_id"]
    assert again == first and _session(stripe_peer, first)["status"] == "open"
    assert _sessions_created(stripe_peer) == 1  # no expire, no create


def test_a_paid_session_answers_409_and_no_second_session(
    stripe_service: Service, stripe_peer: StripePeer
) -> None:
    """Paid at Stripe, its webhooks not received yet: the user is about to have a
    subscription, so another plan gets no session."""
    session_id = _checkout(stripe_service, "cat", "premium").json()["session_id"]
    assert stripe_peer.complete_checkout(session_id).status_code == 200
    for plan in ("pro", "premium"):
        response = _checkout(stripe_service, "cat", plan)
        assert response.status_code == 409, response.text
        body = response.json()
        assert body["code"] == "checkout_already_completed"
        assert body["details"] == {"method": "GET", "endpoint": "/api/v1/billing/status"}
    english = stripe_service.client.post(
        CHECKOUT,
        json={"plan": "pro"},
        headers={**stripe_service.auth("cat"), "Accept-Language": "en"},
    )
    assert english.json()["error"].startswith("A checkout of this account was just paid")
    assert _sessions_created(stripe_peer) == 1


def test_a_session_paid_while_it_is_being_expired_answers_409(
    stripe_service: Service, stripe_peer: StripePeer
) -> None:
    """Stripe refuses to expire the session paid a moment before: 409, no second one."""
    session_id = _checkout(stripe_service, "dan", "premium").json()["session_id"]
    expire = f"/v1/checkout/sessions/{session_id}/expire"
    stripe_peer.fail(expire, status=200, delay=1.0)  # slow: the customer pays meanwhile
    answers: list[httpx.Response] = []
    worker = threading.Thread(
        target=lambda: answers.append(_checkout(stripe_service, "dan", "pro"))
    )
    worker.start()
    deadline = time.monotonic() + 10
    while stripe_peer.calls(expire, "POST") == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert stripe_peer.complete_checkout(session_id).status_code == 200
    worker.join(30)
    (response,) = answers
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "checkout_already_completed"
    assert _sessions_created(stripe_peer) == 1  # no pro session made


def test_two_checkouts_for_different_plans_at_once_leave_one_open_session(
    stripe_service: Service, stripe_peer: StripePeer
) -> None:
    headers = stripe_service.auth("eve")
    # The customer exists (its first session expired), and sessions are slow to create, so
    # both requests see no open session and each creates one.
    stripe_service.clock.fixed = datetime.now(UTC) - timedelta(hours=2)
    first = stripe_service.client.post(CHECKOUT, json={"plan": "premium"}, headers=headers)
    stripe_service.clock.fixed = None
    customer = status(stripe_service, "eve")["stripe_customer_id"]
    expired = f"/v1/checkout/sessions/{first.json()['session_id']}/expire"
    assert httpx.post(f"{stripe_peer.url}{expired}", auth=KEY).status_code == 200
    stripe_peer.fail("/v1/checkout/sessions", status=200, delay=0.5, method="POST")

    def checkout(plan: str) -> httpx.Response:
        return stripe_service.client.post(CHECKOUT, json={"plan": plan}, headers=headers)

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(checkout, ["premium", "pro"]))
    stripe_peer.clear_failures()
    assert {r.status_code for r in answers} <= {200, 409}, [r.text for r in answers]
    for refused in (r for r in answers if r.status_code == 409):
        assert refused.json()["code"] == "checkout_superseded"
    (kept,) = _open_sessions(stripe_peer, customer)
    assert kept in {r.json()["session_id"] for r in answers if r.status_code == 200}
    assert stripe_peer.calls("/v1/customers", "POST") == 1


def test_concurrent_checkouts_for_one_plan_make_one_customer_and_one_session(
    stripe_service: Service, stripe_peer: StripePeer
) -> None:
    stripe_peer.fail("/v1/customers", status=200, delay=0.5)  # slow, so the calls overlap
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: _checkout(stripe_service, "fay", "pro"), range(4)))
    assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
    (session_id,) = {r.json()["session_id"] for r in answers}
    customer = status(stripe_service, "fay")["stripe_customer_id"]
    assert _open_sessions(stripe_peer, customer) == [session_id]
    customers = httpx.get(f"{stripe_peer.url}/v1/customers", auth=KEY).json()["data"]
    assert [c["metadata"]["user_id"] for c in customers] == ["fay"]


def _subscribed(service: Service, user: str, sub_status: str, created: int) -> None:
    """A subscription of the user in `sub_status`, as Stripe's event describes it."""
    assert _checkout(service, user, "premium").status_code == 200
    customer = status(service, user)["stripe_customer_id"]
    price = service.settings.stripe_price_premium or ""
    sub = se.subscription(f"sub_{user}", customer, price, sub_status, created=created)
    response = service.post_event(se.event("customer.subscription.created", sub, created))
    assert response.status_code == 200, response.text


def test_a_subscription_awaiting_its_first_payment_blocks_checkout_for_23_hours(
    stripe_service: Service,
) -> None:
    started = int(time.time()) - 3600
    _subscribed(stripe_service, "gus", "incomplete", started)
    response = _checkout(stripe_service, "gus", "pro")
    assert response.status_code == 409, response.text
    body = response.json()
    until = datetime.fromtimestamp(started, UTC) + timedelta(hours=23)
    assert body["code"] == "subscription_payment_pending"
    assert body["details"] == {
        "portal": "/api/v1/billing/portal",
        "retry_after": until.isoformat(timespec="seconds"),
    }
    assert until.isoformat(timespec="seconds") in body["error"]
    # Past Stripe's window the subscription can no longer be paid: checkout is open again.
    stripe_service.clock.fixed = until + timedelta(minutes=1)
    assert _checkout(stripe_service, "gus", "pro").status_code == 200


def test_a_paused_subscription_points_to_the_portal(stripe_service: Service) -> None:
    _subscribed(stripe_service, "hal", "paused", int(time.time()))
    response = _checkout(stripe_service, "hal", "pro")
    assert response.status_code == 409 and response.json()["code"] == "subscription_paused"
    assert response.json()["details"] == {"method": "POST", "endpoint": "/api/v1/billing/portal"}
