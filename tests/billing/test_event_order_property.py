"""Property: however Stripe delivers a subscription's events — shuffled, duplicated, the
same event several times at once — the final state is the state in-order, single delivery
gives."""

from __future__ import annotations

import copy
import secrets
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterbill.auth.service import lock_user
from meterbill.billing.gateway import StripeGateway
from meterbill.billing.service import subscription_status
from meterbill.billing.webhooks import apply_stripe_event
from meterbill.db import Database
from tests import stripe_events as se
from tests.conftest import base_settings

PRICES = ("price_premium_test", "price_pro_test")
START = 1_790_000_000  # 2026-09-21, a fixed origin so examples replay identically

STEPS = st.lists(
    st.sampled_from(["upgrade", "downgrade", "fail", "past_due", "pay", "reactivate"]),
    max_size=7,
)


def lifecycle(steps: list[str], canceled: bool, first_price: int) -> list[dict[str, Any]]:
    """Events of one subscription, one per minute, as Stripe would create them."""
    price = PRICES[first_price]
    status = "active"
    at = START
    out = [("customer.subscription.created", {"status": status, "price": price}, at)]
    for step in steps:
        at += 60
        if step in ("upgrade", "downgrade"):
            price = PRICES[1 if step == "upgrade" else 0]
            out.append(("customer.subscription.updated", {"status": status, "price": price}, at))
        elif step == "fail":
            status = "past_due"
            out.append(("invoice.payment_failed", {"paid": False}, at))
        elif step == "past_due":
            status = "past_due"
            out.append(("customer.subscription.updated", {"status": status, "price": price}, at))
        elif step == "pay":
            status = "active"
            out.append(("invoice.payment_succeeded", {"paid": True}, at))
        else:
            status = "active"
            out.append(("customer.subscription.updated", {"status": status, "price": price}, at))
    if canceled:
        at += 60
        out.append(("customer.subscription.deleted", {"status": "canceled", "price": price}, at))
    return [{"type": t, "spec": spec, "at": at} for t, spec, at in out]


def materialize(plan: list[dict[str, Any]], customer: str, sub_id: str) -> list[dict[str, Any]]:
    events = []
    for n, step in enumerate(plan):
        spec, at = step["spec"], step["at"]
        if step["type"].startswith("customer.subscription."):
            obj = se.subscription(
                sub_id,
                customer,
                spec["price"],
                spec["status"],
                created=START,
                period_end=START + 30 * 86400,
            )
        else:
            obj = se.invoice(
                f"in_{sub_id}_{n}",
                customer,
                sub_id,
                paid=spec["paid"],
                created=at,
                period_end=at + 30 * 86400,
            )
        events.append(se.event(step["type"], obj, created=at, event_id=f"evt_{sub_id}_{n}"))
    return events


def final_state(db: Database, user_id: str) -> dict[str, Any]:
    body = subscription_status(db, user_id, datetime(2026, 9, 22, tzinfo=UTC)).model_dump()
    body.pop("stripe_customer_id")
    body.pop("stripe_subscription_id")
    return body


@pytest.mark.parametrize("workers", [4])
def test_any_delivery_order_gives_the_in_order_state(database_url: str, workers: int) -> None:
    config = base_settings(database_url)
    db = Database(database_url)
    gateway = StripeGateway(config)
    catalog = config.catalog()
    pool = ThreadPoolExecutor(workers)

    def deliver(event: dict[str, Any]) -> str:
        return apply_stripe_event(db, config, catalog, gateway, event, datetime.now(UTC))

    def new_user() -> tuple[str, str, str]:
        tag = secrets.token_hex(5)
        with db.transaction() as session:
            lock_user(session, f"u_{tag}").stripe_customer_id = f"cus_{tag}"
        return f"u_{tag}", f"cus_{tag}", f"sub_{tag}"

    @settings(
        max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(steps=STEPS, canceled=st.booleans(), first_price=st.integers(0, 1), data=st.data())
    def check(steps: list[str], canceled: bool, first_price: int, data: st.DataObject) -> None:
        plan = lifecycle(steps, canceled, first_price)

        in_order_user, customer, sub_id = new_user()
        for event in materialize(plan, customer, sub_id):
            assert deliver(event) != "duplicate"

        shuffled_user, customer, sub_id = new_user()
        events = materialize(plan, customer, sub_id)
        repeats = data.draw(st.lists(st.sampled_from(events), max_size=len(events)))
        deliveries = data.draw(st.permutations([*events, *copy.deepcopy(repeats)]))
        concurrent = data.draw(st.sampled_from(events))
        outcomes = list(pool.map(deliver, [concurrent] * workers))
        assert outcomes.count("duplicate") == workers - 1
        for event in deliveries:
            deliver(event)

        assert final_state(db, shuffled_user) == final_state(db, in_order_user)

    try:
        check()
    finally:
        pool.shutdown()
        db.dispose()
