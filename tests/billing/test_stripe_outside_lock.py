"""No Stripe call inside a database write transaction: SQLite has one writer, so a slow
Stripe inside `BEGIN IMMEDIATE` would stall every other user's writes (issue 9)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import stripe

from meterbill.auth.service import create_api_key
from tests.billing.test_plan_changes import CANCEL, CHECKOUT, PLAN, subscribe
from tests.conftest import Service, stripe_peer_price
from tests.stripe_peer import StripePeer

# Each case waits this long for Stripe. Behind it, the consume (sent 1 s in) would wait
# ~3.5 s, well over the bound below; a longer delay only made every case slower.
STRIPE_DELAY = 4.5
# A consume takes milliseconds on a quiet machine; the bound leaves room for a loaded CI
# host while staying far below the Stripe delay it must not wait behind.
CONSUME_BOUND = 2.0


@pytest.mark.parametrize("operation", ["checkout", "plan_change", "cancel", "portal"])
def test_a_slow_stripe_does_not_hold_up_another_users_consume(
    make_service: Callable[..., Service], stripe_peer: StripePeer, operation: str
) -> None:
    stripe_peer.reset()
    service = make_service(
        stripe_secret_key="sk_test_meterbill",
        stripe_api_base=stripe_peer.url,
        stripe_price_premium=stripe_peer_price(stripe_peer, 900),
        stripe_price_pro=stripe_peer_price(stripe_peer, 2900),
        stripe_timeout_seconds=STRIPE_DELAY + 10,
    )
    with service.db.transaction() as session:
        api_key = {"X-API-Key": create_api_key(session, "slow-stripe")}
    buyer = service.auth("buyer")
    if operation == "checkout":  # a first checkout creates the Stripe customer
        slow, call = (
            "/v1/customers",
            lambda: service.client.post(CHECKOUT, json={"plan": "pro"}, headers=buyer),
        )
    else:
        sdk = stripe.StripeClient(
            "sk_test_meterbill", base_addresses={"api": stripe_peer.url}, max_network_retries=0
        )
        sub = subscribe(service, sdk, "buyer", "premium")
        slow = f"/v1/subscriptions/{sub['id']}"
        requests: dict[str, Callable[[], httpx.Response]] = {
            "plan_change": lambda: service.client.post(PLAN, json={"plan": "pro"}, headers=buyer),
            "cancel": lambda: service.client.post(CANCEL, headers=buyer),
            "portal": lambda: service.client.post("/api/v1/billing/portal", headers=buyer),
        }
        if operation == "portal":
            slow = "/v1/billing_portal/sessions"
        call = requests[operation]
    stripe_peer.fail(slow, status=200, delay=STRIPE_DELAY, method="POST")
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(call)
            time.sleep(1.0)  # the request now waits on Stripe
            assert not pending.done()
            started = time.monotonic()
            consumed = service.client.post(
                "/api/v1/usage/consume",
                json={"user_id": "bystander", "metric": "api_calls"},
                headers=api_key,
            )
            elapsed = time.monotonic() - started
            assert consumed.status_code == 200, consumed.text
            assert elapsed < CONSUME_BOUND, f"consume waited {elapsed:.2f} s behind Stripe"
            assert pending.result().status_code == 200, pending.result().text
    finally:
        stripe_peer.clear_failures()
