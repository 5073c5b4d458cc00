"""Every statement a Stripe event runs reads through an index (PostgreSQL): the webhook
path stays flat as the books grow. With a million past invoices, three reads of the refund
path scanned whole tables (~70 ms each, one of them under the credit notes' series lock):
`bench.webhooks --history 1000000`, migration 0014_webhook_indexes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, event

from tests import stripe_events as se
from tests.billing.helpers import ts
from tests.conftest import Service
from tests.invoicing.helpers import customer_of, posted

# The tables that grow with the business (the small ones — sequences, the demo's mark,
# settings — may be scanned).
GROWING = (
    "billing_events",
    "invoices",
    "invoice_lines",
    "transactions",
    "saas_subscriptions",
    "saas_users",
    "pending_documents",
    "jobs",
    "usage_alerts",
)
SCAN = re.compile(r"Seq Scan on (\w+)")
PLANNED = ("SELECT", "UPDATE", "DELETE", "INSERT", "WITH")


@dataclass
class Plans:
    planned: int = 0  # statements planned
    scanning: dict[str, list[str]] = field(default_factory=dict)  # statement: tables scanned


@pytest.fixture
def plans(service: Service) -> Iterator[Plans]:
    """Each statement meterbill runs meanwhile, planned by PostgreSQL with sequential scans
    made a last resort: the growing tables it can only read by scanning, by statement."""
    if service.db.engine.dialect.name != "postgresql":
        pytest.skip("plans are PostgreSQL's")
    dsn = service.settings.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    planner = psycopg.connect(dsn, autocommit=True)
    planner.execute("SET enable_seqscan = off")
    seen = Plans()

    def plan(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if many or not statement.lstrip().upper().startswith(PLANNED):
            return
        seen.planned += 1
        lines = [row[0] for row in planner.execute(f"EXPLAIN {statement}", params).fetchall()]
        tables = [m.group(1) for line in lines if (m := SCAN.search(line))]
        if scanned := [t for t in tables if t in GROWING]:
            seen.scanning[" ".join(statement.split())[:200]] = scanned

    event.listen(Engine, "before_cursor_execute", plan)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", plan)
        planner.close()


def test_every_statement_of_the_usual_events_reads_through_an_index(
    service: Service, plans: Plans
) -> None:
    customer = customer_of(service)
    sub = se.subscription("sub_ix", customer, "price_premium_test", created=ts(-60))
    posted(service, se.event("customer.subscription.created", sub, created=ts(-60)))
    posted(
        service,
        se.event(
            "checkout.session.completed",
            se.checkout_session(customer, "sub_ix", "user-1", "premium"),
            created=ts(-59),
        ),
    )
    failed = se.invoice("in_ix0", customer, "sub_ix", paid=False, created=ts(-58))
    posted(service, se.event("invoice.payment_failed", failed, created=ts(-58)))
    paid = se.invoice(
        "in_ix", customer, "sub_ix", amount=1080, payment_intent="pi_ix", created=ts(-50)
    )
    posted(service, se.event("invoice.paid", paid, created=ts(-50)))
    upgrade = se.subscription("sub_ix", customer, "price_pro_test", created=ts(-60))
    posted(service, se.event("customer.subscription.updated", upgrade, created=ts(-40)))
    refund = se.charge_refunded(customer, "pi_ix", 1080, [("re_ix", 300)])
    posted(service, se.event("charge.refunded", refund, created=ts(-30)))
    again = se.event("charge.refunded", refund, created=ts(-30))
    posted(service, again)
    posted(service, again)  # a redelivery
    ended = se.subscription("sub_ix", customer, "price_pro_test", "canceled", created=ts(-60))
    posted(service, se.event("customer.subscription.deleted", ended, created=ts(-20)))
    assert plans.planned > 50  # every event's statements went through the planner
    assert plans.scanning == {}
