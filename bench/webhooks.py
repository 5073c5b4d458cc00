"""Signed Stripe webhooks applied per second (PostgreSQL), from several concurrent senders.

Each of `--users` customers goes through `customer.subscription.created` (premium),
`invoice.paid` (an invoice is issued, its PDF rendered after the answer),
`customer.subscription.updated` (to pro) and `charge.refunded` (a partial refund: a credit
note), in that order per customer (one phase after the other); about `--dup-ratio` of the
events are delivered a second time, as Stripe does. Every request carries a real
`Stripe-Signature` header computed just before sending.

Beside it, in the same run, three references:
- raw: the same signed payloads verified with Stripe's library, parsed, and stored in
  `billing_events` (`INSERT … ON CONFLICT DO NOTHING`, one transaction each) by as many
  threads over psycopg, no HTTP and no handling;
- the floor: bench/floor.py's `/webhook` on the same stack (FastAPI, uvicorn, 2 workers,
  SQLAlchemy's pool, psycopg) verifies each signed payload with Stripe's library, parses it
  and stores it once in one transaction, with the same clients: a webhook that applies
  nothing, with no more code than that;
- the applying floor: bench/floor.py's `/webhook-apply` on the same stack does the same,
  then applies the event by hand in its transaction: one writable-CTE statement per event
  into meterbill's own tables (users, subscriptions, a gapless-numbered invoice or credit
  note with its line, the payment or refund, the render job). What applying this mix costs
  at the least on this stack and machine, with no rules, catalog, audit or checks;
- the HTTP ceiling: once every event is applied, all of them are sent again to meterbill.
  Each is then verified, parsed and answered `duplicate` after one INSERT that finds its
  row: what the same stack, clients and machine allow for a webhook that applies nothing.

    .venv/bin/python -m bench.webhooks --users 500 --clients 4
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import random
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any

import psycopg
import stripe
from sqlalchemy import text

from bench.common import (
    banner,
    floor,
    fresh_database,
    keep_alive,
    meterbill,
    percentile,
    run_threads,
)
from bench.floor import prepare
from meterbill.db import Database

SECRET = "whsec_bench_secret"
PREMIUM, PRO = "price_premium_bench", "price_pro_bench"
API_VERSION = "2026-10-28.clover"


def sign(payload: bytes) -> str:
    stamp = int(time.time())
    digest = hmac.new(SECRET.encode(), f"{stamp}.".encode() + payload, hashlib.sha256)
    return f"t={stamp},v1={digest.hexdigest()}"


def event(type_: str, obj: dict[str, Any], created: int) -> dict[str, Any]:
    return {
        "id": f"evt_{secrets.token_hex(10)}",
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": {"object": obj, "previous_attributes": {}},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
    }


def subscription(sub: str, customer: str, user: str, price: str, amount: int) -> dict[str, Any]:
    now = int(time.time())
    return {
        "id": sub,
        "object": "subscription",
        "customer": customer,
        "status": "active",
        "created": now,
        "start_date": now,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "ended_at": None,
        "currency": "eur",
        "metadata": {"user_id": user},
        "items": {
            "object": "list",
            "data": [
                {
                    "id": f"si_{secrets.token_hex(8)}",
                    "object": "subscription_item",
                    "current_period_start": now,
                    "current_period_end": now + 30 * 86400,
                    "quantity": 1,
                    "subscription": sub,
                    "price": {
                        "id": price,
                        "object": "price",
                        "active": True,
                        "currency": "eur",
                        "unit_amount": amount,
                        "recurring": {"interval": "month", "interval_count": 1},
                        "product": "prod_bench",
                        "type": "recurring",
                    },
                }
            ],
            "has_more": False,
        },
        "latest_invoice": None,
    }


def invoice(invoice_id: str, customer: str, sub: str, intent: str) -> dict[str, Any]:
    now = int(time.time())
    return {
        "id": invoice_id,
        "object": "invoice",
        "customer": customer,
        "customer_email": "buyer@example.com",
        "customer_name": "Buyer SAS",
        "currency": "eur",
        "created": now,
        "status": "paid",
        "amount_due": 900,
        "amount_paid": 900,
        "amount_remaining": 0,
        "attempt_count": 1,
        "billing_reason": "subscription_create",
        "subtotal": 900,
        "total": 900,
        "total_taxes": [],
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": sub, "metadata": {}},
        },
        "lines": {
            "object": "list",
            "data": [
                {
                    "id": f"il_{secrets.token_hex(8)}",
                    "object": "line_item",
                    "amount": 900,
                    "currency": "eur",
                    "description": "1 × Premium (at €9.00 / month)",
                    "quantity": 1,
                    "period": {"start": now, "end": now + 30 * 86400},
                    "pricing": {
                        "type": "price_details",
                        "price_details": {"price": PREMIUM, "product": "prod_bench"},
                        "unit_amount_decimal": "900",
                    },
                    "parent": {
                        "type": "subscription_item_details",
                        "subscription_item_details": {"subscription": sub},
                    },
                }
            ],
            "has_more": False,
        },
        "payments": {
            "object": "list",
            "data": [
                {
                    "object": "invoice_payment",
                    "status": "paid",
                    "payment": {"type": "payment_intent", "payment_intent": intent},
                }
            ],
        },
    }


def refund(customer: str, intent: str) -> dict[str, Any]:
    return {
        "id": f"ch_{secrets.token_hex(8)}",
        "object": "charge",
        "customer": customer,
        "amount": 900,
        "amount_refunded": 300,
        "currency": "eur",
        "payment_intent": intent,
        "refunded": False,
        "refunds": {
            "object": "list",
            "data": [
                {
                    "id": f"re_{secrets.token_hex(8)}",
                    "object": "refund",
                    "amount": 300,
                    "currency": "eur",
                    "status": "succeeded",
                    "payment_intent": intent,
                }
            ],
        },
    }


def phases(users: int, dup_ratio: float) -> list[list[bytes]]:
    """The payloads to send, phase by phase (one event per customer per phase), with some
    delivered twice."""
    created = int(time.time()) - 60
    plan: list[list[dict[str, Any]]] = [[], [], []]
    for n in range(users):
        user, customer, sub = f"user-{n}", f"cus_bench{n}", f"sub_bench{n}"
        intent = f"pi_bench{n}"
        plan[0].append(
            event(
                "customer.subscription.created",
                subscription(sub, customer, user, PREMIUM, 900),
                created,
            )
        )
        plan[1].append(
            event("invoice.paid", invoice(f"in_bench{n}", customer, sub, intent), created + 1)
        )
        plan[2].append(
            event(
                "customer.subscription.updated",
                subscription(sub, customer, user, PRO, 2900),
                created + 2,
            )
        )
        plan[2].append(event("charge.refunded", refund(customer, intent), created + 3))
    sent = []
    for events in plan:
        bodies = [json.dumps(e, separators=(",", ":")).encode() for e in events]
        bodies += random.sample(bodies, int(len(bodies) * dup_ratio))
        random.shuffle(bodies)
        sent.append(bodies)
    return sent


def deliver(
    base: str, bodies: list[bytes], clients: int, path: str = "/api/v1/billing/webhook"
) -> tuple[float, Counter[str], list[float]]:
    """Send every body, `clients` threads each on one keep-alive connection."""
    queue = list(bodies)
    lock = threading.Lock()
    outcomes: Counter[str] = Counter()
    samples: list[float] = []

    def client() -> None:
        http = keep_alive(base, 60)
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                began = time.perf_counter()
                headers = {"Content-Type": "application/json", "Stripe-Signature": sign(body)}
                http.request("POST", path, body=body, headers=headers)
                answer = http.getresponse()
                content = answer.read()
                took = (time.perf_counter() - began) * 1000
                outcome = json.loads(content)["outcome"] if answer.status == 200 else answer.status
                with lock:
                    outcomes[str(outcome)] += 1
                    samples.append(took)
        finally:
            http.close()

    return run_threads(client, clients), outcomes, samples


_RAW_INSERT = """
INSERT INTO billing_events (stripe_event_id, event_type, payload, stripe_created, outcome,
                            received_at)
VALUES (%s, %s, %s, %s, 'applied', now()) ON CONFLICT (stripe_event_id) DO NOTHING
"""


def raw_reference(url: str, bodies: list[bytes], clients: int) -> float:
    """Verify, parse and store each payload once, no HTTP and no handling."""
    dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
    queue = list(bodies)
    lock = threading.Lock()

    def worker() -> None:
        with psycopg.connect(dsn) as conn:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                payload = body.decode()
                stripe.WebhookSignature.verify_header(payload, sign(body), SECRET, 300)
                parsed = json.loads(payload)
                conn.execute(
                    _RAW_INSERT,
                    (parsed["id"], parsed["type"], payload, parsed["created"]),
                )
                conn.commit()

    return run_threads(worker, clients)


_HISTORY = [
    # Past customers, each with ten paid invoices, their payments and their events, as a
    # SaaS that has billed for a while holds them (numbers of a past month).
    """INSERT INTO saas_users (id, plan, stripe_customer_id, locale, created_at, updated_at)
       SELECT 'past-' || n, 'premium', 'cus_past' || n, 'fr', now() - interval '400 days',
              now() - interval '400 days'
       FROM generate_series(1, %(users)s) n""",
    """INSERT INTO invoices (invoice_number, kind, user_id, period, amount, amount_ht,
                             amount_tva, currency, status, stripe_invoice_id, issued_at,
                             paid_at)
       SELECT 'FACT-202501-' || lpad(n::text, 8, '0'), 'invoice', 'past-' || (n %% %(users)s + 1),
              '2025-01', 900, 750, 150, 'EUR', 'paid', 'in_past' || n,
              '2025-01-31'::timestamptz, '2025-01-31'::timestamptz
       FROM generate_series(1, %(documents)s) n""",
    """INSERT INTO transactions (user_id, invoice_id, type, amount, currency,
                                 stripe_payment_intent, stripe_object_id, stripe_event_id,
                                 stripe_invoice_id, stripe_charge_id, created_at)
       SELECT user_id, id, 'payment', amount, 'EUR', 'pi_past' || id, 'payment:' || id,
              'evt_past' || id, stripe_invoice_id, 'ch_past' || id, issued_at
       FROM invoices WHERE invoice_number LIKE 'FACT-202501-%%'""",
    """INSERT INTO billing_events (stripe_event_id, event_type, user_id, payload,
                                   stripe_subscription_id, stripe_created, outcome,
                                   received_at, stripe_customer_id)
       SELECT 'evt_past' || n, 'invoice.paid', 'past-' || (n %% %(users)s + 1), '{}',
              'sub_past' || (n %% %(users)s + 1), 1735600000 + n, 'applied',
              '2025-01-31'::timestamptz, 'cus_past' || (n %% %(users)s + 1)
       FROM generate_series(1, %(documents)s) n""",
    "ANALYZE",
]


def preload_history(url: str, documents: int) -> None:
    """`documents` past invoices with their payments and events (ten per past customer)."""
    dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in _HISTORY:
            conn.execute(statement, {"users": max(1, documents // 10), "documents": documents})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dup-ratio", type=float, default=0.1)
    parser.add_argument(
        "--history",
        type=int,
        default=0,
        help="past invoices (with payments and events) in meterbill's database first",
    )
    args = parser.parse_args()
    banner("stripe webhooks", "postgresql")
    url = fresh_database("postgresql", "meterbill_bench_webhooks")
    raw_url = fresh_database("postgresql", "meterbill_bench_webhooks_raw")
    sent = phases(args.users, args.dup_ratio)
    every = [body for bodies in sent for body in bodies]
    print(
        f"{len(every)} signed events ({args.users} customers x 4 + {args.dup_ratio:.0%} "
        f"delivered twice), {args.clients} clients, {args.workers} uvicorn workers",
        flush=True,
    )
    raw_rate = len(every) / raw_reference(raw_url, every, args.clients)
    print(f"raw reference (verify + parse + store): {raw_rate:,.0f} events/s", flush=True)
    prepare(raw_url, 1, 1)
    with floor(raw_url, args.workers, FLOOR_WEBHOOK_SECRET=SECRET) as floor_base:
        floor_time, floor_outcomes, floor_samples = deliver(
            floor_base, every, args.clients, "/webhook"
        )
    floor_rate = len(every) / floor_time
    print(
        f"floor (FastAPI endpoint: verify + parse + store, {args.workers} workers): "
        f"{floor_rate:,.0f} events/s, p50 {percentile(floor_samples, 0.5):.1f} ms "
        f"({dict(floor_outcomes)})",
        flush=True,
    )
    apply_url = fresh_database("postgresql", "meterbill_bench_webhooks_apply")
    apply_time = 0.0
    with floor(apply_url, args.workers, FLOOR_WEBHOOK_SECRET=SECRET) as floor_base:
        phase_rates = []
        for bodies in sent:  # phase by phase, as meterbill gets them
            elapsed, _, _ = deliver(floor_base, bodies, args.clients, "/webhook-apply")
            apply_time += elapsed
            phase_rates.append(f"{len(bodies) / elapsed:,.0f}")
    apply_rate = len(every) / apply_time
    apply_db = Database(apply_url)
    with apply_db.engine.connect() as conn:
        apply_documents = conn.execute(text("SELECT count(*) FROM invoices")).scalar()
    apply_db.dispose()
    print(
        f"applying floor (the same, then one hand-written statement per event): "
        f"{apply_rate:,.0f} events/s ({apply_documents} invoices and credit notes; by phase "
        f"{', '.join(phase_rates)} events/s)",
        flush=True,
    )
    env = {
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_PRICE_PREMIUM": PREMIUM,
        "STRIPE_PRICE_PRO": PRO,
        "METERBILL_INVOICE_DIR": tempfile.mkdtemp(prefix="meterbill-bench-invoices-"),
        "METERBILL_SELLER_NAME": "Bench SAS",
        "METERBILL_SELLER_ADDRESS": "1 rue de la Paix;75002 Paris",
        "METERBILL_SELLER_EMAIL": "billing@bench.example",
        "METERBILL_SELLER_SIREN": "123456789",
        "METERBILL_SELLER_SIRET": "12345678900012",
        "METERBILL_SELLER_VAT_NUMBER": "FR32123456789",
        "METERBILL_SELLER_LEGAL_FORM": "SAS au capital de 1 000 €",
        "METERBILL_SELLER_RCS": "RCS Paris 123 456 789",
    }
    if args.history:
        began = time.perf_counter()
        preload_history(url, args.history)
        print(
            f"history: {args.history:,} past invoices, payments and events "
            f"({time.perf_counter() - began:.0f} s)",
            flush=True,
        )
    total_time, outcomes, samples = 0.0, Counter[str](), []
    with meterbill(url, args.workers, None, **env) as base:
        names = ("subscription.created", "invoice.paid", "subscription.updated + charge.refunded")
        for name, bodies in zip(names, sent, strict=True):
            elapsed, phase_outcomes, phase_samples = deliver(base, bodies, args.clients)
            print(
                f"  {name}: {len(bodies) / elapsed:,.0f} events/s, "
                f"p50 {percentile(phase_samples, 0.5):.1f} ms",
                flush=True,
            )
            total_time += elapsed
            outcomes.update(phase_outcomes)
            samples += phase_samples
        again, again_outcomes, _ = deliver(base, every, args.clients)
    ceiling = len(every) / again
    rate = len(every) / total_time
    db = Database(url)
    with db.engine.connect() as conn:
        stored: dict[str, int] = dict(
            conn.execute(
                text(
                    "SELECT outcome, count(*) FROM billing_events "
                    "WHERE stripe_event_id NOT LIKE 'evt\\_past%' GROUP BY 1"
                )
            ).all()
        )
        invoices = conn.execute(
            text("SELECT count(*) FROM invoices WHERE invoice_number NOT LIKE 'FACT-202501-%'")
        ).scalar()
    db.dispose()
    print(f"answers: {dict(outcomes)}")
    print(f"stored outcomes: {stored}; invoices and credit notes: {invoices}")
    print(
        f"meterbill: {rate:,.0f} events/s applied (p50 {percentile(samples, 0.5):.1f} ms, "
        f"p99 {percentile(samples, 0.99):.1f} ms) = {rate / raw_rate:.0%} of the raw "
        f"reference ({raw_rate:,.0f}/s); floor 500 events/s"
    )
    print(
        f"HTTP ceiling (every event sent again, answered {dict(again_outcomes)}): "
        f"{ceiling:,.0f} events/s; meterbill applies at {rate / ceiling:.0%} of it"
    )
    print(
        f"floor {floor_rate:,.0f} events/s: meterbill applies at {rate / floor_rate:.0%} of it; "
        f"the 500 events/s asked is {500 / floor_rate:.0%} of it"
    )
    print(
        f"applying floor {apply_rate:,.0f} events/s: meterbill applies at "
        f"{rate / apply_rate:.0%} of it; the 500 events/s asked is {500 / apply_rate:.0%} of it"
    )
    print(f"os.cpu_count() = {os.cpu_count()}")
    print("command: .venv/bin/python -m bench.webhooks " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
