"""Whatever the order and repetition of Stripe's deliveries, one invoice per paid Stripe
invoice, one credit note per refund, and gapless numbers in both series."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from meterbill.auth.service import lock_user
from meterbill.billing.gateway import StripeGateway
from meterbill.billing.webhooks import apply_stripe_event
from meterbill.config import Settings
from meterbill.db import Database
from meterbill.invoicing.models import Invoice, Transaction
from tests import stripe_events as se
from tests.conftest import TEST_SELLER

_runs = itertools.count(1)
stories = st.lists(
    st.tuples(
        st.integers(100, 50_000),  # amount paid
        st.lists(st.integers(1, 40), max_size=3),  # refunds, in % of what is left
    ),
    min_size=1,
    max_size=4,
)


def _events(run: int, customer: str, story: list[tuple[int, list[int]]]) -> tuple[list[Any], int]:
    events: list[dict[str, Any]] = []
    refund_count = 0
    for index, (amount, cuts) in enumerate(story):
        stripe_id, intent = f"in_p{run}_{index}", f"pi_p{run}_{index}"
        paid = se.invoice(stripe_id, customer, None, amount=amount, payment_intent=intent)
        events += [se.event("invoice.paid", paid), se.event("invoice.payment_succeeded", paid)]
        refunds: list[tuple[str, int]] = []
        left = amount
        for number, cut in enumerate(cuts):
            value = max(1, left * cut // 100)
            refunds.append((f"re_p{run}_{index}_{number}", value))
            left -= value
            charge = se.charge_refunded(customer, intent, amount, list(refunds))
            events.append(se.event("charge.refunded", charge))
        refund_count += len(refunds)
    return events, refund_count


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(story=stories, data=st.data())
def test_any_delivery_order_gives_one_document_each_and_gapless_numbers(
    database_url: str, story: list[tuple[int, list[int]]], data: st.DataObject
) -> None:
    run = next(_runs)
    now = datetime(2100 + run // 12, run % 12 + 1, 5, tzinfo=UTC)  # a month of its own
    config = Settings(_env_file=None, database_url=database_url, **TEST_SELLER)  # type: ignore[call-arg]
    db = Database(database_url)
    customer = f"cus_prop{run}"
    with db.transaction() as session:
        lock_user(session, f"prop-{run}").stripe_customer_id = customer
    events, refund_count = _events(run, customer, story)
    deliveries = data.draw(st.permutations(events + data.draw(st.lists(st.sampled_from(events)))))
    for event in deliveries:
        apply_stripe_event(db, config, config.catalog(), StripeGateway(config), event, now)

    with db.reading() as session:
        documents = session.scalars(select(Invoice).where(Invoice.period == f"{now:%Y-%m}")).all()
        refunds = session.scalars(
            select(Transaction).where(
                Transaction.type == "refund", Transaction.user_id == f"prop-{run}"
            )
        ).all()
    db.dispose()
    invoices = [d for d in documents if d.kind == "invoice"]
    credits = [d for d in documents if d.kind == "credit_note"]
    assert sorted(int(d.invoice_number[-4:]) for d in invoices) == list(range(1, len(story) + 1))
    assert sorted(int(d.invoice_number[-4:]) for d in credits) == list(range(1, refund_count + 1))
    assert len(refunds) == refund_count
    for invoice in invoices:
        credited = sum(c.amount for c in credits if c.credited_invoice_id == invoice.id)
        refunded = sum(r.amount for r in refunds if r.invoice_id == invoice.id)
        assert credited == refunded and -credited <= invoice.amount
