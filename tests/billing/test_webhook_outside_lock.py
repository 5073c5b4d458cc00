"""A slow Stripe never stalls other writers: a webhook reads Stripe before its write
transaction (on SQLite, `BEGIN IMMEDIATE` locks the whole file)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import httpx

from meterbill.auth.service import create_api_key
from tests import stripe_events as se
from tests.billing.helpers import status
from tests.conftest import WEBHOOK_SECRET, Service, stripe_peer_price
from tests.stripe_peer import StripePeer, sign_payload

# The webhook waits this long for Stripe; behind it, the consume would wait as long, more
# than twice the bound below. A longer delay only made the test slower.
STRIPE_DELAY = 4.5
# A consume takes milliseconds on a quiet machine; the bound leaves room for a loaded CI
# host while staying far below the Stripe delay it must not wait behind.
CONSUME_BOUND = 2.0


def test_a_webhook_waiting_for_stripe_does_not_hold_up_consume(
    make_service: Callable[..., Service], stripe_peer: StripePeer
) -> None:
    stripe_peer.reset()
    service = make_service(
        stripe_secret_key="sk_test_meterbill",
        stripe_api_base=stripe_peer.url,
        stripe_price_premium=stripe_peer_price(stripe_peer, 900),
        stripe_price_pro=stripe_peer_price(stripe_peer, 2900),
        stripe_timeout_seconds=STRIPE_DELAY * 3,  # slow, not failing
    )
    with service.db.transaction() as session:
        key = create_api_key(session, "backend")
    headers = {"X-API-Key": key}
    # A customer meterbill has not linked yet: the webhook must ask Stripe whose it is.
    customer = httpx.post(
        f"{stripe_peer.url}/v1/customers",
        data={"metadata[user_id]": "user-9"},
        auth=("sk_test_meterbill", ""),
    ).json()["id"]
    event = se.event(
        "customer.subscription.created",
        se.subscription("sub_slow", customer, str(service.settings.stripe_price_pro)),
    )
    warm = service.client.post(
        "/api/v1/usage/consume", json={"user_id": "other", "metric": "api_calls"}, headers=headers
    )
    assert warm.status_code == 200, warm.text

    stripe_peer.reset_calls()
    stripe_peer.fail("/v1/customers/", status=200, delay=STRIPE_DELAY, method="GET")
    answers: list[httpx.Response] = []

    def deliver() -> None:
        with httpx.Client(base_url=service.url, timeout=30) as client:
            payload = json.dumps(event).encode()
            answers.append(
                client.post(
                    "/api/v1/billing/webhook",
                    content=payload,
                    headers={
                        "Content-Type": "application/json",
                        "Stripe-Signature": sign_payload(payload, WEBHOOK_SECRET),
                    },
                )
            )

    webhook = threading.Thread(target=deliver)
    started = time.monotonic()
    webhook.start()
    try:
        while stripe_peer.calls("/v1/customers/", "GET") == 0:
            assert time.monotonic() - started < STRIPE_DELAY, "the webhook never asked Stripe"
            time.sleep(0.02)
        before = time.monotonic()
        consumed = service.client.post(
            "/api/v1/usage/consume",
            json={"user_id": "other", "metric": "api_calls"},
            headers=headers,
        )
        elapsed = time.monotonic() - before
        assert consumed.status_code == 200, consumed.text
        assert elapsed < CONSUME_BOUND, f"consume waited {elapsed:.2f} s behind the webhook"
        assert time.monotonic() - started < STRIPE_DELAY  # Stripe was still answering
    finally:
        webhook.join(30)
        stripe_peer.clear_failures()
    (answer,) = answers
    assert answer.status_code == 200 and answer.json()["outcome"] == "applied"
    assert status(service, "user-9")["plan"] == "pro"
