"""Every Stripe subscription status, in every delivery order: the plan granted is the one
the README's table gives for the state Stripe's events describe in order (issue 9)."""

from __future__ import annotations

import copy
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterbill.auth.service import lock_user
from meterbill.billing.gateway import StripeGateway
from meterbill.billing.service import subscription_status
from meterbill.billing.webhooks import apply_stripe_event
from meterbill.db import Database
from tests import stripe_events as se
from tests.billing.helpers import status, transactions, ts, user_with_customer
from tests.conftest import Clock, Service, base_settings

STATUSES = (
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "unpaid",
    "paused",
    "canceled",
)
PRICES = {"price_premium_test": "premium", "price_pro_test": "pro"}
START = 1_790_000_000  # 2026-09-21, a fixed origin so examples replay identically
GRACE_DAYS = 3

STEP = st.one_of(
    st.tuples(st.just("snapshot"), st.sampled_from(STATUSES), st.sampled_from(sorted(PRICES))),
    st.tuples(st.just("fail"), st.none(), st.none()),
    st.tuples(st.just("pay"), st.none(), st.none()),
)
STEPS = st.lists(STEP, max_size=8)


def expected(first: tuple[str, str], steps: list[Any], now: int) -> tuple[str, str, int | None]:
    """(plan granted at `now`, status, grace end) by Stripe's rules, applied in order:
    a failure makes a paying subscription past due (grace from the failure; a retry does
    not extend it), a payment settles a past-due or unpaid one, a snapshot says the status,
    `canceled` and `incomplete_expired` are final."""
    status_, price = "", ""
    grace_end: int | None = None
    for n, (kind, new_status, new_price) in enumerate([("snapshot", *first), *steps]):
        at = START + 60 * n
        if status_ in ("canceled", "incomplete_expired"):
            break
        if kind == "snapshot":
            if new_status == "past_due" and status_ != "past_due":
                grace_end = at + GRACE_DAYS * 86400
            elif new_status != "past_due":
                grace_end = None
            status_, price = new_status, new_price
        elif kind == "fail" and status_ in ("active", "trialing", "past_due"):
            if status_ != "past_due":
                grace_end = at + GRACE_DAYS * 86400
            status_ = "past_due"
        elif kind == "pay" and status_ in ("past_due", "unpaid"):
            status_, grace_end = "active", None
    in_grace = status_ == "past_due" and grace_end is not None and now < grace_end
    granted = PRICES[price] if status_ in ("active", "trialing") or in_grace else "free"
    return granted, status_, grace_end


def materialize(
    first: tuple[str, str], steps: list[Any], customer: str, sub_id: str
) -> list[dict[str, Any]]:
    """The Stripe events of the lifecycle, one a minute (each its own `created` second)."""

    def snapshot(kind: str, status_: str, price: str, at: int, n: int) -> dict[str, Any]:
        obj = se.subscription(sub_id, customer, price, status_, created=START)
        type_ = "customer.subscription.deleted" if status_ == "canceled" else kind
        return se.event(type_, obj, created=at, event_id=f"evt_{sub_id}_{n:02d}")

    events = [snapshot("customer.subscription.created", *first, START, 0)]
    for n, (kind, status_, price) in enumerate(steps, start=1):
        at = START + 60 * n
        if kind == "snapshot":
            events.append(snapshot("customer.subscription.updated", status_, price, at, n))
        else:
            # The invoice was drafted well before the attempt (the grace must not use it).
            invoice = se.invoice(
                f"in_{sub_id}_{n}", customer, sub_id, paid=kind == "pay", created=at - 7200
            )
            type_ = "invoice.payment_succeeded" if kind == "pay" else "invoice.payment_failed"
            events.append(se.event(type_, invoice, created=at, event_id=f"evt_{sub_id}_{n:02d}"))
    return events


def test_every_status_in_any_order_grants_what_the_table_says(database_url: str) -> None:
    config = base_settings(database_url, grace_days=GRACE_DAYS)
    db = Database(database_url)
    gateway = StripeGateway(config)
    catalog = config.catalog()

    def deliver(event: dict[str, Any]) -> str:
        return apply_stripe_event(db, config, catalog, gateway, event, datetime.now(UTC))

    def new_user() -> tuple[str, str, str]:
        tag = secrets.token_hex(5)
        with db.transaction() as session:
            lock_user(session, f"u_{tag}").stripe_customer_id = f"cus_{tag}"
        return f"u_{tag}", f"cus_{tag}", f"sub_{tag}"

    def observed(user_id: str, now: int) -> tuple[str, str, int | None]:
        body = subscription_status(db, user_id, datetime.fromtimestamp(now, UTC))
        grace = body.grace_period_end
        return body.plan, body.status, int(grace.timestamp()) if grace else None

    @settings(
        max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(
        first=st.tuples(st.sampled_from(STATUSES), st.sampled_from(sorted(PRICES))),
        steps=STEPS,
        data=st.data(),
    )
    def check(first: tuple[str, str], steps: list[Any], data: st.DataObject) -> None:
        user_id, customer, sub_id = new_user()
        events = materialize(first, steps, customer, sub_id)
        repeats = data.draw(st.lists(st.sampled_from(events), max_size=len(events)))
        for event in data.draw(st.permutations([*events, *copy.deepcopy(repeats)])):
            deliver(event)
        last = START + 60 * len(steps)
        for now in (last + 1, last + (GRACE_DAYS - 1) * 86400, last + (GRACE_DAYS + 1) * 86400):
            assert observed(user_id, now) == expected(first, steps, now)
        plan, final_status, _ = observed(user_id, last + 1)
        if final_status in ("incomplete", "incomplete_expired", "unpaid", "paused", "canceled"):
            assert plan == "free"

    try:
        check()
    finally:
        db.dispose()


def test_a_failed_payment_never_makes_an_incomplete_subscription_paid(
    make_service: Callable[..., Service],
) -> None:
    """Today's seed gave premium with a grace period to an incomplete subscription whose
    first payment failed."""
    service = make_service(grace_days=3)
    customer = user_with_customer(service)
    sub = se.subscription("sub_inc", customer, "price_premium_test", "incomplete")
    service.post_event(se.event("customer.subscription.created", sub, created=ts(-60)))
    for n, offset in enumerate((-50, -40)):
        failed = se.invoice(f"in_inc{n}", customer, "sub_inc", paid=False, created=ts(-55))
        service.post_event(se.event("invoice.payment_failed", failed, created=ts(offset)))
    body = status(service)
    assert (body["plan"], body["status"], body["grace_period_end"]) == ("free", "incomplete", None)
    expired = se.subscription("sub_inc", customer, "price_premium_test", "incomplete_expired")
    service.post_event(se.event("customer.subscription.updated", expired, created=ts(-30)))
    late = se.invoice("in_inc2", customer, "sub_inc", paid=False, created=ts(-20))
    service.post_event(se.event("invoice.payment_failed", late, created=ts(-20)))
    body = status(service)
    assert (body["plan"], body["status"]) == ("free", "incomplete_expired")


def test_trialing_grants_and_paused_or_unpaid_do_not(
    make_service: Callable[..., Service],
) -> None:
    service = make_service()
    customer = user_with_customer(service)
    for offset, state, plan in ((-30, "trialing", "pro"), (-20, "paused", "free")):
        sub = se.subscription("sub_tr", customer, "price_pro_test", state)
        service.post_event(se.event("customer.subscription.updated", sub, created=ts(offset)))
        assert (status(service)["plan"], status(service)["status"]) == (plan, state)
    unpaid = se.subscription("sub_tr", customer, "price_pro_test", "unpaid")
    service.post_event(se.event("customer.subscription.updated", unpaid, created=ts(-10)))
    assert status(service)["plan"] == "free"


def test_the_grace_period_runs_from_the_failure_not_the_invoice(
    make_service: Callable[..., Service],
) -> None:
    """A SEPA debit failing days after the renewal invoice was drafted still gets the whole
    grace period; a retry does not extend it; a payment ends it."""
    clock = Clock()
    service = make_service(clock=clock, grace_days=3)
    customer = user_with_customer(service)
    sub = se.subscription("sub_sepa", customer, "price_premium_test", created=ts(-40 * 86400))
    service.post_event(se.event("customer.subscription.created", sub, created=ts(-40 * 86400)))
    drafted = ts(-6 * 86400)
    failed_at = ts(-86400)
    invoice = se.invoice("in_sepa", customer, "sub_sepa", paid=False, created=drafted)
    service.post_event(se.event("invoice.payment_failed", invoice, created=failed_at))
    body = status(service)
    grace_end = datetime.fromtimestamp(failed_at, UTC) + timedelta(days=3)
    assert (body["plan"], body["status"]) == ("premium", "past_due")
    assert datetime.fromisoformat(body["grace_period_end"]) == grace_end

    retry = dict(invoice, attempt_count=2)
    service.post_event(se.event("invoice.payment_failed", retry, created=ts(-3600)))
    assert datetime.fromisoformat(status(service)["grace_period_end"]) == grace_end
    clock.fixed = grace_end + timedelta(seconds=1)
    assert status(service)["plan"] == "free"  # the retry did not extend it

    clock.fixed = None
    paid = se.invoice("in_sepa", customer, "sub_sepa", created=drafted)
    service.post_event(se.event("invoice.payment_succeeded", paid, created=ts(-60)))
    body = status(service)
    assert (body["plan"], body["status"], body["grace_period_end"]) == ("premium", "active", None)
    assert [t.type for t in transactions(service)] == [
        "failed_payment",
        "failed_payment",
        "payment",
    ]
