"""Nothing paid is left out: a payment or refund that arrives before meterbill can tell
whose it is is kept, and applied — once — when its customer is linked to a user: by the
event that makes the link, by a redelivery, or by the worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from meterbill.auth.models import User
from meterbill.auth.service import lock_user
from meterbill.jobs.worker import SCHEDULES, Worker
from tests import stripe_events as se
from tests.billing.helpers import invoices, status, transactions, ts
from tests.conftest import Clock, Service


def _payment_and_refund(customer: str) -> tuple[dict[str, Any], dict[str, Any]]:
    paid = se.event(
        "invoice.paid",
        se.invoice("in_kept", customer, "sub_kept", amount=900, payment_intent="pi_kept"),
        created=ts(-30),
    )
    refund = se.event(
        "charge.refunded",
        se.charge_refunded(customer, "pi_kept", 900, [("re_kept", 300)]),
        created=ts(-20),
    )
    return paid, refund


def _books(service: Service, user_id: str) -> list[tuple[str, str, int]]:
    """(document kind, ledger entry, amount) of the user, in order."""
    documents = {doc.id: doc.kind for doc in invoices(service) if doc.user_id == user_id}
    return [
        (documents.get(t.invoice_id or 0, "-"), t.type, t.amount)
        for t in transactions(service)
        if t.user_id == user_id
    ]


def test_payment_and_refund_before_the_link_are_applied_by_the_linking_event(
    service: Service,
) -> None:
    paid, refund = _payment_and_refund("cus_late")
    assert service.post_event(paid).json()["outcome"] == "unresolved"
    assert service.post_event(refund).json()["outcome"] == "unresolved"
    assert invoices(service) == []

    # The subscription's event names the user (metadata): the customer is linked.
    sub = se.subscription("sub_kept", "cus_late", "price_premium_test", user_id="user-1")
    created = se.event("customer.subscription.created", sub, created=ts(-40))
    assert service.post_event(created).json()["outcome"] == "applied"

    assert _books(service, "user-1") == [("invoice", "payment", 900), ("invoice", "refund", -300)]
    kinds = sorted(doc.kind for doc in invoices(service))
    assert kinds == ["credit_note", "invoice"]
    for event in (paid, refund):  # Stripe redelivers: nothing more
        assert service.post_event(event).json()["outcome"] == "duplicate"
    assert len(invoices(service)) == 2 and len(transactions(service)) == 2
    assert status(service)["plan"] == "premium"


def test_the_user_named_on_the_invoices_subscription_details_is_used(service: Service) -> None:
    """Today's invoices carry the subscription's metadata under
    `parent.subscription_details.metadata`."""
    invoice = se.invoice("in_meta", "cus_meta", "sub_meta", amount=2900, payment_intent="pi_m")
    invoice["parent"]["subscription_details"]["metadata"] = {"user_id": "user-2"}
    response = service.post_event(se.event("invoice.paid", invoice))
    assert response.json()["outcome"] == "applied"
    assert _books(service, "user-2") == [("invoice", "payment", 2900)]
    with service.db.reading() as session:
        assert session.get_one(User, "user-2").stripe_customer_id == "cus_meta"


def test_a_redelivered_kept_payment_is_applied_once_its_customer_is_linked(
    service: Service,
) -> None:
    paid, _ = _payment_and_refund("cus_redelivered")
    assert service.post_event(paid).json()["outcome"] == "unresolved"
    with service.db.transaction() as session:  # linked as a checkout links it
        lock_user(session, "user-3").stripe_customer_id = "cus_redelivered"
    assert service.post_event(paid).json()["outcome"] == "applied"
    assert service.post_event(paid).json()["outcome"] == "duplicate"
    assert _books(service, "user-3") == [("invoice", "payment", 900)]


def test_the_worker_applies_kept_events_once_their_customer_is_linked(service: Service) -> None:
    paid, refund = _payment_and_refund("cus_worker")
    for event in (refund, paid):  # the refund first: order is never guaranteed
        assert service.post_event(event).json()["outcome"] == "unresolved"
    now = datetime.now(UTC)

    def run_schedules(minutes: int) -> None:
        clock = Clock(now + timedelta(minutes=minutes))
        worker = Worker(service.settings, service.db, clock=clock, schedules=SCHEDULES)
        worker.tick_schedules()
        worker.run_pending()

    run_schedules(0)
    assert transactions(service) == []  # nobody to bill yet: still kept

    with service.db.transaction() as session:  # linked without any Stripe event
        lock_user(session, "user-4").stripe_customer_id = "cus_worker"
    run_schedules(5)
    run_schedules(10)  # a second run changes nothing
    assert _books(service, "user-4") == [("invoice", "payment", 900), ("invoice", "refund", -300)]
    assert sorted(doc.kind for doc in invoices(service)) == ["credit_note", "invoice"]
