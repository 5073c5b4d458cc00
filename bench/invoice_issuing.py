"""How fast several webhook processes issue invoices on one database, and that the numbers
stay gapless: `python -m bench.invoice_issuing postgresql+psycopg://postgres@127.0.0.1/bench`.

Each process applies every `invoice.paid` event (shuffled), so every Stripe invoice is
delivered once per process; one invoice each must come out, numbered 0001..N.
"""

from __future__ import annotations

import multiprocessing
import random
import sys
import time
from datetime import UTC, datetime

from sqlalchemy import func, select

from meterbill.auth.service import lock_user
from meterbill.billing.gateway import StripeGateway
from meterbill.billing.webhooks import apply_stripe_event
from meterbill.config import Settings
from meterbill.db import Database
from meterbill.invoicing.models import Invoice
from meterbill.migrate import upgrade
from tests import stripe_events as se
from tests.conftest import TEST_SELLER

NOW = datetime(2030, 1, 15, tzinfo=UTC)


def _deliver(url: str, events: list[dict[str, object]], start_at: float) -> None:
    settings = Settings(_env_file=None, database_url=url, **TEST_SELLER)  # type: ignore[call-arg]
    db = Database(url)
    catalog, gateway = settings.catalog(), StripeGateway(settings)
    time.sleep(max(0.0, start_at - time.time()))
    for event in events:
        apply_stripe_event(db, settings, catalog, gateway, event, NOW)  # type: ignore[arg-type]
    db.dispose()


def main(url: str, processes: int = 4, invoices: int = 400, users: int = 20) -> None:
    db = Database(url)
    upgrade(db.engine)
    run = f"{time.time_ns():x}"
    customers = [f"cus_bench_{run}_{u}" for u in range(users)]
    with db.transaction() as session:
        for user, customer in enumerate(customers):
            lock_user(session, f"bench-{run}-{user}").stripe_customer_id = customer
        before = session.scalar(
            select(func.count()).select_from(Invoice).where(Invoice.period == "2030-01")
        )
    stripe_invoices = [
        se.invoice(f"in_bench_{run}_{i}", customers[i % users], None) for i in range(invoices)
    ]
    batches = []
    for worker in range(processes):
        batch = [
            se.event("invoice.paid", inv, event_id=f"evt_{run}_{i}_{worker}")
            for i, inv in enumerate(stripe_invoices)
        ]
        random.Random(worker).shuffle(batch)
        batches.append(batch)
    start_at = time.time() + 3
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_deliver, args=(url, b, start_at)) for b in batches]
    for process in workers:
        process.start()
    for process in workers:
        process.join()
    elapsed = time.time() - start_at
    with db.reading() as session:
        numbers = sorted(
            int(n.rsplit("-", 1)[1])
            for n in session.scalars(
                select(Invoice.invoice_number).where(Invoice.period == "2030-01")
            )
        )
    db.dispose()
    expected = list(range(1, (before or 0) + invoices + 1))
    print(
        f"{processes} processes, {processes * invoices} deliveries of {invoices} Stripe invoices "
        f"in {elapsed:.2f} s ({processes * invoices / elapsed:.0f} deliveries/s); "
        f"gapless and unique: {numbers == expected}"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sqlite:///bench-invoicing.db")
