"""Two snapshots of one subscription created in the same second: Stripe's `created` cannot
tell which is newer, nor can the spelling of event ids; Stripe's subscription can."""

from __future__ import annotations

import pytest
import stripe

from meterbill.auth.service import lock_user
from tests import stripe_events as se
from tests.billing.helpers import events, status, ts
from tests.conftest import Service
from tests.stripe_peer import StripePeer


def peer_subscription(peer: StripePeer, service: Service, user_id: str) -> tuple[str, str]:
    """A customer of `user_id` subscribed to pro at the Stripe peer: (customer, sub id)."""
    client = stripe.StripeClient(
        "sk_test_meterbill", base_addresses={"api": peer.url}, max_network_retries=0
    )
    customer = client.v1.customers.create(params={"metadata": {"user_id": user_id}})
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    pro = str(service.settings.stripe_price_pro)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"plan": pro}]})
    with service.db.transaction() as session:
        lock_user(session, user_id).stripe_customer_id = customer.id
    return customer.id, sub.id


@pytest.mark.parametrize("stale_id_sorts_last", [True, False])
def test_same_second_snapshots_end_as_stripe_has_the_subscription(
    stripe_service: Service, stripe_peer: StripePeer, stale_id_sorts_last: bool
) -> None:
    """An upgrade premium → pro: the premium snapshot (stale) and the pro one (Stripe's
    state) share their `created` second, and arrive in the worse order (stale last)."""
    service = stripe_service
    customer, sub_id = peer_subscription(stripe_peer, service, "user-1")
    premium = str(service.settings.stripe_price_premium)
    pro = str(service.settings.stripe_price_pro)
    second = ts(-5)
    stale_id, current_id = ("evt_b", "evt_a") if stale_id_sorts_last else ("evt_a", "evt_b")
    stale = se.event(
        "customer.subscription.updated",
        se.subscription(sub_id, customer, premium, created=second - 60),
        created=second,
        event_id=f"{stale_id}_{sub_id}",
    )
    current = se.event(
        "customer.subscription.updated",
        se.subscription(sub_id, customer, pro, created=second - 60),
        created=second,
        event_id=f"{current_id}_{sub_id}",
    )
    stripe_peer.reset_calls()
    assert service.post_event(current).json()["outcome"] == "applied"
    assert stripe_peer.calls(f"/v1/subscriptions/{sub_id}", "GET") == 0  # no tie yet
    assert service.post_event(stale).json()["outcome"] == "applied"
    body = status(service)
    assert (body["plan"], body["status"]) == ("pro", "active")
    assert stripe_peer.calls(f"/v1/subscriptions/{sub_id}", "GET") == 1  # asked Stripe

    # Redelivered, in the other order, nothing moves.
    for event in (stale, current):
        assert service.post_event(event).json()["outcome"] == "duplicate"
    assert status(service)["plan"] == "pro"
    assert len(events(service)) == 2


def test_identical_same_second_snapshots_need_no_question(
    stripe_service: Service, stripe_peer: StripePeer
) -> None:
    service = stripe_service
    customer, sub_id = peer_subscription(stripe_peer, service, "user-1")
    pro = str(service.settings.stripe_price_pro)
    second = ts(-5)
    obj = se.subscription(sub_id, customer, pro, created=second - 60)
    stripe_peer.reset_calls()
    for type_ in ("customer.subscription.created", "customer.subscription.updated"):
        assert service.post_event(se.event(type_, obj, created=second)).status_code == 200
    assert stripe_peer.calls("/v1/subscriptions", "GET") == 0
    assert status(service)["plan"] == "pro"
