"""Gapless FACT numbers: several processes at once, rollbacks, months, widening."""

from __future__ import annotations

import multiprocessing
import random
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update

from meterbill.auth.service import lock_user
from meterbill.billing.gateway import StripeGateway
from meterbill.billing.webhooks import apply_stripe_event
from meterbill.config import Settings
from meterbill.db import Database
from meterbill.invoicing.models import DocumentSequence, Invoice, Transaction
from meterbill.invoicing.service import issue_document_number
from tests import stripe_events as se
from tests.conftest import TEST_SELLER

ISSUED = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PROCESSES = 4
USERS = 5
STRIPE_INVOICES = 40


def _deliver(url: str, events: list[dict[str, object]], start_at: float) -> None:
    """One webhook-handling process: applies its events as fast as it can."""
    settings = Settings(_env_file=None, database_url=url, stripe_secret_key="", **TEST_SELLER)  # type: ignore[call-arg]
    db = Database(url)
    catalog, gateway = settings.catalog(), StripeGateway(settings)
    time.sleep(max(0.0, start_at - time.time()))
    for event in events:
        apply_stripe_event(db, settings, catalog, gateway, event, ISSUED)  # type: ignore[arg-type]
    db.dispose()


def test_concurrent_processes_issue_gapless_unique_numbers(database_url: str) -> None:
    """Four processes receive the same 40 paid Stripe invoices, shuffled, as redeliveries
    (same event id) and as twins (invoice.paid / invoice.payment_succeeded): exactly one
    invoice each, numbered 0001..0040 with no gap and no duplicate."""
    db = Database(database_url)
    customers = [f"cus_conc{u}" for u in range(USERS)]
    with db.transaction() as session:
        for user, customer in enumerate(customers):
            lock_user(session, f"conc-user-{user}").stripe_customer_id = customer
    stripe_invoices = [
        se.invoice(f"in_conc{i}", customers[i % USERS], None, amount=1200 + i)
        for i in range(STRIPE_INVOICES)
    ]
    batches = []
    for worker in range(PROCESSES):
        kind = ("invoice.paid", "invoice.payment_succeeded")[worker % 2]
        batch = [
            se.event(kind, inv, event_id=f"evt_conc_{i}_{worker % 2}")
            for i, inv in enumerate(stripe_invoices)
        ]
        random.Random(worker).shuffle(batch)
        batches.append(batch)
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 3.0  # every process imported and connected before the start
    workers = [
        context.Process(target=_deliver, args=(database_url, batch, start_at)) for batch in batches
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
        assert process.exitcode == 0
    with db.reading() as session:
        invoices = session.scalars(select(Invoice)).all()
        payments = session.scalars(select(Transaction).where(Transaction.type == "payment")).all()
        counter = session.get_one(DocumentSequence, ("FACT", "202611"))
    db.dispose()
    numbers = sorted(invoice.invoice_number for invoice in invoices)
    assert numbers == [f"FACT-202611-{n:04d}" for n in range(1, STRIPE_INVOICES + 1)]
    assert len({invoice.stripe_invoice_id for invoice in invoices}) == STRIPE_INVOICES
    assert len(payments) == STRIPE_INVOICES and counter.last_number == STRIPE_INVOICES


def test_a_rolled_back_transaction_gives_its_number_back(database_url: str) -> None:
    db = Database(database_url)
    with pytest.raises(RuntimeError), db.transaction() as session:
        assert issue_document_number(session, "FACT", ISSUED) == "FACT-202611-0001"
        raise RuntimeError("the invoice could not be written")
    with db.transaction() as session:
        assert issue_document_number(session, "FACT", ISSUED) == "FACT-202611-0001"
    db.dispose()


def test_each_month_and_each_series_counts_from_0001(database_url: str) -> None:
    db = Database(database_url)
    december = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
    with db.transaction() as session:
        issued = [
            issue_document_number(session, "FACT", ISSUED),
            issue_document_number(session, "FACT", ISSUED),
            issue_document_number(session, "AVOIR", ISSUED),
            issue_document_number(session, "FACT", december),
        ]
    assert issued == [
        "FACT-202611-0001",
        "FACT-202611-0002",
        "AVOIR-202611-0001",
        "FACT-202612-0001",
    ]
    db.dispose()


def test_the_counter_widens_past_9999_instead_of_failing(database_url: str) -> None:
    db = Database(database_url)
    with db.transaction() as session:
        issue_document_number(session, "FACT", ISSUED)
        session.execute(update(DocumentSequence).values(last_number=9998))
    with db.transaction() as session:
        assert issue_document_number(session, "FACT", ISSUED) == "FACT-202611-9999"
        assert issue_document_number(session, "FACT", ISSUED) == "FACT-202611-10000"
    db.dispose()
