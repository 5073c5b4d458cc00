"""The Stripe webhook: signed, exactly once, order-safe, atomic (SPEC §4, seed flaws 1-4)."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from meterbill.db import utcnow
from tests import stripe_events as se
from tests.billing.helpers import events, invoices, status, transactions, ts, user_with_customer
from tests.conftest import WEBHOOK_SECRET, Clock, Service
from tests.stripe_peer import StripePeer, sign_payload

WEBHOOK = "/api/v1/billing/webhook"
PREMIUM = "price_premium_test"
PRO = "price_pro_test"


def test_missing_bad_or_stale_signatures_get_400(service: Service) -> None:
    customer = user_with_customer(service)
    payload = json.dumps(
        se.event("customer.subscription.created", se.subscription("sub_1", customer, PREMIUM))
    ).encode()
    stale = sign_payload(payload, WEBHOOK_SECRET, timestamp=ts(-600))
    for headers in (
        {},
        {"Stripe-Signature": "t=1,v1=abc"},
        {"Stripe-Signature": sign_payload(payload, "whsec_other")},
        {"Stripe-Signature": stale},
    ):
        response = service.client.post(WEBHOOK, content=payload, headers=headers)
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_signature"
    assert events(service) == []
    assert status(service)["plan"] == "free"


def test_without_a_secret_the_webhook_refuses_events(
    make_service: Callable[..., Service],
) -> None:
    """Seed flaw 3: with no secret, anyone could post events granting paid plans."""
    service = make_service(stripe_webhook_secret="")
    customer = user_with_customer(service)
    forged = se.event("customer.subscription.created", se.subscription("sub_f", customer, PRO))
    response = service.post_event(forged, secret=None)
    assert response.status_code == 503
    assert response.json()["code"] == "webhook_not_configured"
    assert status(service)["plan"] == "free"


def test_unsigned_events_only_with_the_insecure_flag(
    make_service: Callable[..., Service],
) -> None:
    service = make_service(stripe_webhook_secret="", insecure_webhooks=True)
    customer = user_with_customer(service)
    event = se.event("customer.subscription.created", se.subscription("sub_d", customer, PRO))
    assert service.post_event(event, secret=None).status_code == 200
    assert status(service)["plan"] == "pro"


def test_subscription_created_grants_the_plan_of_its_price(service: Service) -> None:
    customer = user_with_customer(service)
    period_end = ts(30 * 86400)
    sub = se.subscription("sub_a", customer, PRO, period_end=period_end)
    response = service.post_event(se.event("customer.subscription.created", sub))
    assert response.status_code == 200 and response.json()["outcome"] == "applied"
    body = status(service)
    assert body["plan"] == "pro" and body["status"] == "active"
    assert body["stripe_subscription_id"] == "sub_a" and body["stripe_customer_id"] == customer
    assert datetime.fromisoformat(body["current_period_end"]) == datetime.fromtimestamp(
        period_end, UTC
    )


def test_redelivered_event_changes_nothing(service: Service) -> None:
    """Seed flaw 1: a redelivered event was processed again."""
    customer = user_with_customer(service)
    service.post_event(
        se.event(
            "customer.subscription.created",
            se.subscription("sub_r", customer, PREMIUM),
            created=ts(-30),
        )
    )
    paid = se.event(
        "invoice.payment_succeeded", se.invoice("in_r", customer, "sub_r"), created=ts(-20)
    )
    first = service.post_event(paid)
    upgrade = se.event(
        "customer.subscription.updated", se.subscription("sub_r", customer, PRO), created=ts(-10)
    )
    service.post_event(upgrade)
    again = service.post_event(paid)
    assert first.json()["outcome"] == "applied" and again.json()["outcome"] == "duplicate"
    assert len(invoices(service)) == 1 and len(transactions(service)) == 1
    assert [e.stripe_event_id for e in events(service)].count(paid["id"]) == 1
    assert status(service)["plan"] == "pro"


def test_a_redelivery_writes_nothing(service: Service) -> None:
    """A duplicate is answered without writing: no row lock taken on the event's row (a
    lock is a write, and its commit would wait for the WAL like any other)."""
    if service.db.engine.dialect.name != "postgresql":
        pytest.skip("row locks are written in the row on PostgreSQL; SQLite locks the file")
    customer = user_with_customer(service)
    event = se.event("customer.subscription.created", se.subscription("sub_w", customer, PRO))
    assert service.post_event(event).json()["outcome"] == "applied"

    def locker() -> int:
        with service.db.engine.connect() as conn:
            xmax = conn.execute(
                text("SELECT xmax::text::bigint FROM billing_events WHERE stripe_event_id = :i"),
                {"i": event["id"]},
            ).scalar_one()
        return int(xmax)

    before = locker()
    assert service.post_event(event).json()["outcome"] == "duplicate"
    assert locker() == before  # no transaction locked (wrote into) the row


def test_same_event_posted_at_once_is_applied_once(service: Service) -> None:
    customer = user_with_customer(service)
    service.post_event(
        se.event(
            "customer.subscription.created",
            se.subscription("sub_c", customer, PREMIUM),
            created=ts(-5),
        )
    )
    paid = se.event("invoice.paid", se.invoice("in_c", customer, "sub_c"))
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: service.post_event(paid), range(8)))
    outcomes = sorted(r.json()["outcome"] for r in responses)
    assert [r.status_code for r in responses] == [200] * 8
    assert outcomes == ["applied"] + ["duplicate"] * 7
    assert len(invoices(service)) == 1 and len(transactions(service)) == 1


def test_late_update_never_resurrects_a_canceled_subscription(service: Service) -> None:
    """Seed flaw 2: out-of-order events could bring a canceled subscription back."""
    customer = user_with_customer(service)
    created = se.event(
        "customer.subscription.created",
        se.subscription("sub_o", customer, PREMIUM),
        created=ts(-30),
    )
    updated = se.event(
        "customer.subscription.updated", se.subscription("sub_o", customer, PRO), created=ts(-20)
    )
    deleted = se.event(
        "customer.subscription.deleted",
        se.subscription("sub_o", customer, PRO, status="canceled"),
        created=ts(-10),
    )
    for event in (created, deleted, updated):
        assert service.post_event(event).status_code == 200
    body = status(service)
    assert body["status"] == "canceled" and body["plan"] == "free"
    assert body["end_date"] is not None


def test_unknown_price_grants_nothing_and_is_recorded(service: Service) -> None:
    """Seed flaw 4: an unknown price id silently granted premium."""
    customer = user_with_customer(service)
    event = se.event(
        "customer.subscription.created", se.subscription("sub_u", customer, "price_somebody_else")
    )
    response = service.post_event(event)
    assert response.status_code == 200 and response.json()["outcome"] == "rejected"
    assert status(service)["plan"] == "free"
    (record,) = events(service)
    assert record.error and "price_somebody_else" in record.error


def test_payment_failure_starts_a_grace_period_that_ends(
    make_service: Callable[..., Service],
) -> None:
    clock = Clock()
    service = make_service(clock=clock, grace_days=3)
    customer = user_with_customer(service)
    service.post_event(
        se.event(
            "customer.subscription.created",
            se.subscription("sub_g", customer, PREMIUM),
            created=ts(-60),
        )
    )
    failed_at = ts(-30)
    service.post_event(
        se.event(
            "invoice.payment_failed",
            se.invoice("in_g", customer, "sub_g", paid=False, created=failed_at),
            created=failed_at,
        )
    )
    body = status(service)
    grace_end = datetime.fromtimestamp(failed_at, UTC) + timedelta(days=3)
    assert body["status"] == "past_due" and body["plan"] == "premium"
    assert datetime.fromisoformat(body["grace_period_end"]) == grace_end
    clock.fixed = grace_end + timedelta(seconds=1)
    assert status(service)["plan"] == "free"  # no job needed for this to be true
    clock.fixed = None
    service.post_event(
        se.event("invoice.payment_succeeded", se.invoice("in_g", customer, "sub_g"), created=ts(-5))
    )
    body = status(service)
    assert body["status"] == "active" and body["grace_period_end"] is None
    assert body["plan"] == "premium"
    kinds = [t.type for t in transactions(service)]
    assert kinds == ["failed_payment", "payment"]


def test_plan_comes_from_the_database_not_the_token(service: Service) -> None:
    """Seed flaw 5: the plan used for limits came from the JWT."""
    customer = user_with_customer(service)
    assert status(service, plan="pro")["plan"] == "free"
    service.post_event(
        se.event("customer.subscription.created", se.subscription("sub_t", customer, PREMIUM))
    )
    consumption = service.client.get(
        "/api/v1/billing/consumption", headers=service.auth("user-1", plan="free")
    ).json()
    assert consumption["plan"] == "premium"
    assert consumption["consumption"]["limit_api_calls"] == 3000


def test_payment_issues_a_numbered_invoice_once_for_twin_events(service: Service) -> None:
    customer = user_with_customer(service)
    service.post_event(
        se.event(
            "customer.subscription.created",
            se.subscription("sub_i", customer, PREMIUM),
            created=ts(-9),
        )
    )
    stripe_invoice = se.invoice("in_i", customer, "sub_i", amount=1080, payment_intent="pi_i")
    service.post_event(se.event("invoice.payment_succeeded", stripe_invoice))
    service.post_event(se.event("invoice.paid", stripe_invoice))
    (invoice,) = invoices(service)
    assert invoice.invoice_number == f"FACT-{utcnow():%Y%m}-0001"
    assert invoice.amount == 1080 and invoice.currency == "EUR"
    (payment,) = transactions(service)
    assert payment.stripe_payment_intent == "pi_i" and payment.invoice_id == invoice.id
    service.post_event(se.event("invoice.paid", se.invoice("in_j", customer, "sub_i")))
    assert [i.invoice_number[-4:] for i in invoices(service)] == ["0001", "0002"]


def test_refund_is_recorded_once_as_a_negative_entry(service: Service) -> None:
    customer = user_with_customer(service)
    service.post_event(
        se.event("invoice.paid", se.invoice("in_x", customer, None, payment_intent="pi_x"))
    )
    refund = se.event("charge.refunded", se.charge_refunded(customer, "pi_x", 900, [("re_1", 300)]))
    service.post_event(refund)
    service.post_event(refund)
    payment, refunded = transactions(service)
    assert refunded.type == "refund" and refunded.amount == -300
    assert refunded.invoice_id == payment.invoice_id


def test_a_failing_handler_rolls_back_and_answers_500(
    stripe_service: Service, stripe_peer: StripePeer
) -> None:
    """The event's user must be looked up at Stripe; while Stripe fails, nothing is kept
    and Stripe is told to retry."""
    customer = httpx_customer(stripe_peer, "user-9")
    event = se.event(
        "customer.subscription.created",
        se.subscription("sub_z", customer, stripe_service.settings.stripe_price_pro or ""),
    )
    stripe_peer.fail("/v1/customers", status=500)
    response = stripe_service.post_event(event)
    assert response.status_code == 500 and response.json()["code"] == "webhook_failed"
    assert "SECRET" not in response.text
    assert events(stripe_service) == []
    stripe_peer.clear_failures()
    retried = stripe_service.post_event(event)
    assert retried.status_code == 200 and retried.json()["outcome"] == "applied"
    assert status(stripe_service, "user-9")["plan"] == "pro"


def httpx_customer(peer: StripePeer, user_id: str) -> str:
    import httpx

    return str(
        httpx.post(
            f"{peer.url}/v1/customers", data={"metadata[user_id]": user_id}, auth=("sk_test_x", "")
        ).json()["id"]
    )


def test_status_of_a_user_without_subscription(service: Service) -> None:
    assert status(service, "nobody") == {
        "plan": "free",
        "status": "active",
        "stripe_customer_id": None,
        "stripe_subscription_id": None,
        "start_date": None,
        "end_date": None,
        "current_period_end": None,
        "grace_period_end": None,
        "cancel_at_period_end": False,
        "cancel_at": None,
        "pending_plan": None,
        "pending_plan_at": None,
    }


def test_other_event_types_are_recorded_and_acknowledged(service: Service) -> None:
    event = se.event("customer.created", {"id": "cus_new", "object": "customer"})
    response = service.post_event(event)
    assert response.status_code == 200 and response.json()["outcome"] == "ignored"
    assert [(e.stripe_event_id, e.outcome) for e in events(service)] == [(event["id"], "ignored")]
    assert service.post_event(event).json()["outcome"] == "duplicate"
