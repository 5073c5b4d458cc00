"""The floor: the least a consume or a one-row read can cost on meterbill's own stack
(FastAPI, the same uvicorn and protocol, SQLAlchemy's pool, psycopg 3, PostgreSQL), with
no authentication and no rules. The benchmarks serve it beside meterbill and measure both
in the same run.

    POST /consume {user_id, id, value}: one transaction — `UPDATE floor_quota SET used =
        used + v WHERE user_id = … AND used + v <= lim RETURNING used`, then the event's
        idempotent insert (`ON CONFLICT DO NOTHING`); 429 when the limit refuses it.
    GET /read?user_id=…: one row read, in autocommit (one round trip).
    POST /webhook (a signed Stripe event): the signature verified with Stripe's library
        (FLOOR_WEBHOOK_SECRET), the body parsed, the event stored once (`INSERT … ON
        CONFLICT DO NOTHING`, one transaction) — a webhook that applies nothing.
    POST /webhook-apply (the same, then applied): the least the bench's mix of events can
        write into meterbill's own tables, by hand, in the event's transaction — the event
        recorded once, then ONE statement (writable CTEs) per event: a subscription upserts
        its user and its row (newer snapshot wins) and queues the plan-change webhook;
        `invoice.paid` locks its user, numbers the invoice in its series (the sequence
        row's lock until commit keeps numbers gapless), writes the invoice, its line, the
        payment and the render job; `charge.refunded` numbers and writes a credit note
        against the paid invoice with its line, the refund and the render job. No catalog,
        taxes from the payload, no audit, no checks: the least an applying webhook costs.

    FLOOR_DATABASE_URL=postgresql://… .venv/bin/python -m bench.floor --port 8800 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import stripe
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy import Engine, create_engine, text

SCHEMA = """
CREATE TABLE IF NOT EXISTS floor_quota (user_id text PRIMARY KEY, used bigint NOT NULL,
                                        lim bigint NOT NULL);
CREATE TABLE IF NOT EXISTS floor_events (user_id text NOT NULL, event_id text NOT NULL,
                                         value bigint NOT NULL, at timestamptz NOT NULL,
                                         PRIMARY KEY (user_id, event_id));
CREATE TABLE IF NOT EXISTS floor_webhooks (id text PRIMARY KEY, type text NOT NULL,
                                           payload text NOT NULL);
"""

app = FastAPI()
_engine: Engine | None = None


def engine() -> Engine:
    global _engine
    if _engine is None:
        url = os.environ["FLOOR_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://")
        _engine = create_engine(url, pool_size=10, max_overflow=20)
    return _engine


def prepare(url: str, users: int, limit: int) -> None:
    """The floor's tables in the benchmark's database, one quota row per user."""
    eng = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with eng.begin() as conn:
        conn.exec_driver_sql(SCHEMA)
        conn.exec_driver_sql("TRUNCATE floor_quota, floor_events, floor_webhooks")
        conn.execute(
            text(
                "INSERT INTO floor_quota SELECT 'user-' || n, 0, :lim FROM generate_series(0, :n) n"
            ),
            {"lim": limit, "n": users - 1},
        )
    eng.dispose()


class ConsumeIn(BaseModel):
    user_id: str
    id: str
    value: int = 1


@app.post("/consume")
def consume(body: ConsumeIn, response: Response) -> dict[str, Any]:
    with engine().begin() as conn:
        used = conn.exec_driver_sql(
            "UPDATE floor_quota SET used = used + %(v)s "
            "WHERE user_id = %(u)s AND used + %(v)s <= lim RETURNING used",
            {"u": body.user_id, "v": body.value},
        ).scalar()
        if used is None:
            response.status_code = 429
            return {"allowed": False}
        conn.exec_driver_sql(
            "INSERT INTO floor_events VALUES (%(u)s, %(i)s, %(v)s, now()) ON CONFLICT DO NOTHING",
            {"u": body.user_id, "i": body.id, "v": body.value},
        )
    return {"allowed": True, "used": used}


@app.get("/read")
def read(user_id: str) -> dict[str, Any]:
    # One round trip: a single read needs no transaction around it.
    with engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        used = conn.exec_driver_sql(
            "SELECT used FROM floor_quota WHERE user_id = %(u)s", {"u": user_id}
        ).scalar()
    return {"used": used}


async def _verified(request: Request) -> str | None:
    """The body, once its Stripe signature is verified with Stripe's library; else None."""
    payload = (await request.body()).decode()
    try:
        stripe.WebhookSignature.verify_header(
            payload,
            request.headers.get("stripe-signature", ""),
            os.environ.get("FLOOR_WEBHOOK_SECRET", ""),
            300,
        )
    except stripe.SignatureVerificationError:
        return None
    return payload


@app.post("/webhook")
async def webhook(request: Request, response: Response) -> dict[str, Any]:
    payload = await _verified(request)
    if payload is None:
        response.status_code = 400
        return {"error": "signature"}
    event = json.loads(payload)
    return await run_in_threadpool(_store_event, event["id"], event["type"], payload)


def _store_event(event_id: str, event_type: str, payload: str) -> dict[str, Any]:
    with engine().begin() as conn:
        stored = conn.exec_driver_sql(
            "INSERT INTO floor_webhooks VALUES (%(i)s, %(t)s, %(p)s) ON CONFLICT DO NOTHING",
            {"i": event_id, "t": event_type, "p": payload},
        ).rowcount
    return {"outcome": "applied" if stored else "duplicate"}


_PLANS = {"price_premium_bench": "premium", "price_pro_bench": "pro"}

_SUBSCRIPTION = """
WITH u AS (
  INSERT INTO saas_users (id, plan, stripe_customer_id, locale, created_at, updated_at)
  VALUES (%(user)s, %(plan)s, %(customer)s, 'fr', now(), now())
  ON CONFLICT (id) DO UPDATE SET plan = EXCLUDED.plan, updated_at = now()
  RETURNING id
), s AS (
  INSERT INTO saas_subscriptions (user_id, plan, status, stripe_customer_id,
    stripe_subscription_id, stripe_price_id, start_date, current_period_end,
    state_event_created, updated_at)
  SELECT u.id, %(plan)s, %(status)s, %(customer)s, %(sub)s, %(price)s,
    to_timestamp(%(start)s), to_timestamp(%(end)s), %(created)s, now() FROM u
  ON CONFLICT (stripe_subscription_id) DO UPDATE SET plan = EXCLUDED.plan,
    status = EXCLUDED.status, stripe_price_id = EXCLUDED.stripe_price_id,
    current_period_end = EXCLUDED.current_period_end,
    state_event_created = EXCLUDED.state_event_created, updated_at = now()
  WHERE saas_subscriptions.state_event_created <= EXCLUDED.state_event_created
  RETURNING user_id
)
INSERT INTO jobs (kind, payload, dedupe_key, status, attempts, max_attempts, run_at, created_at)
SELECT 'webhook.plan_changed', '{"user_id":"' || s.user_id || '"}', %(event)s, 'queued', 0, 10,
  now(), now() FROM s
"""

_DOCUMENT = """
WITH u AS (
  SELECT id FROM saas_users WHERE stripe_customer_id = %(customer)s FOR UPDATE
), paid AS (
  SELECT i.id, i.amount FROM invoices i JOIN transactions t ON t.invoice_id = i.id
  WHERE t.stripe_payment_intent = %(intent)s AND t.type = 'payment' AND %(credit)s
), sub AS (
  UPDATE saas_subscriptions SET status = 'active', updated_at = now(),
    state_event_created = GREATEST(state_event_created, %(created)s)
  WHERE stripe_subscription_id = %(sub)s AND NOT %(credit)s
), seq AS (
  INSERT INTO document_sequences (series, period, last_number) VALUES (%(series)s, %(month)s, 1)
  ON CONFLICT (series, period) DO UPDATE SET last_number = document_sequences.last_number + 1
  RETURNING last_number
), doc AS (
  INSERT INTO invoices (invoice_number, kind, user_id, period, amount, amount_ht, amount_tva,
    currency, status, stripe_invoice_id, stripe_refund_id, credited_invoice_id, issued_at,
    paid_at, seller, buyer_name, buyer_email, buyer_identity)
  SELECT %(series)s || '-' || %(month)s || '-' || lpad(seq.last_number::text, 5, '0'),
    %(kind)s, u.id, %(period)s, %(ttc)s, %(ht)s, %(ttc)s - %(ht)s, %(currency)s, 'paid',
    %(invoice)s, %(refund)s, (SELECT id FROM paid), now(), now(), %(seller)s, %(name)s,
    %(email)s, '{}'
  FROM u, seq
  RETURNING id, user_id
), line AS (
  INSERT INTO invoice_lines (invoice_id, position, description, quantity, unit_price_ht,
    vat_rate_bp, amount_ht, amount_tva, amount_ttc, vat_category)
  SELECT doc.id, 1, %(description)s, 1, %(ht)s::text, 2000, %(ht)s, %(ttc)s - %(ht)s, %(ttc)s,
    'S' FROM doc
), money AS (
  INSERT INTO transactions (user_id, invoice_id, type, amount, currency, stripe_payment_intent,
    stripe_object_id, stripe_event_id, stripe_invoice_id, created_at)
  SELECT doc.user_id, doc.id, %(type)s, %(ttc)s, %(currency)s, %(intent)s, %(object)s,
    %(event)s, %(invoice)s, now() FROM doc
)
INSERT INTO jobs (kind, payload, dedupe_key, status, attempts, max_attempts, run_at, created_at)
SELECT 'invoice.render', '{"invoice_id":' || doc.id || '}', 'render:' || doc.id, 'queued', 0,
  10, now(), now() FROM doc
"""

_SELLER = json.dumps({"name": "Bench SAS", "siren": "123456789"})


def _apply(conn: Any, event: dict[str, Any]) -> None:
    """The one statement that applies the event (the bench's four types)."""
    obj, kind = event["data"]["object"], event["type"]
    if kind.startswith("customer.subscription."):
        item = obj["items"]["data"][0]
        price = item["price"]["id"]
        conn.exec_driver_sql(
            _SUBSCRIPTION,
            {
                "user": obj["metadata"]["user_id"],
                "plan": _PLANS.get(price, "free"),
                "customer": obj["customer"],
                "status": obj["status"],
                "sub": obj["id"],
                "price": price,
                "start": obj["start_date"],
                "end": item["current_period_end"],
                "created": event["created"],
                "event": event["id"],
            },
        )
    elif kind in ("invoice.paid", "charge.refunded"):
        credit = kind == "charge.refunded"
        if credit:
            refund = obj["refunds"]["data"][0]
            ttc, intent, obj_id = refund["amount"], obj["payment_intent"], refund["id"]
            sub, invoice, refund_id = None, None, refund["id"]
        else:
            ttc, obj_id = obj["amount_paid"], obj["id"]
            intent = obj["payments"]["data"][0]["payment"]["payment_intent"]
            sub = obj["parent"]["subscription_details"]["subscription"]
            invoice, refund_id = obj["id"], None
        month = time.strftime("%Y%m", time.gmtime(event["created"]))
        conn.exec_driver_sql(
            _DOCUMENT,
            {
                "customer": obj["customer"],
                "intent": intent,
                "credit": credit,
                "created": event["created"],
                "sub": sub,
                "series": "AV" if credit else "F",
                "month": month,
                "period": f"{month[:4]}-{month[4:]}",
                "kind": "credit_note" if credit else "invoice",
                "ttc": ttc,
                "ht": ttc * 100 // 120,
                "currency": obj["currency"].upper(),
                "invoice": invoice,
                "refund": refund_id,
                "seller": _SELLER,
                "name": obj.get("customer_name"),
                "email": obj.get("customer_email"),
                "description": "Refund" if credit else "Subscription",
                "type": "refund" if credit else "payment",
                "object": obj_id,
                "event": event["id"],
            },
        )


@app.post("/webhook-apply")
async def webhook_apply(request: Request, response: Response) -> dict[str, Any]:
    payload = await _verified(request)
    if payload is None:
        response.status_code = 400
        return {"error": "signature"}
    return await run_in_threadpool(_record_and_apply, json.loads(payload), payload)


def _record_and_apply(event: dict[str, Any], payload: str) -> dict[str, Any]:
    with engine().begin() as conn:
        stored = conn.exec_driver_sql(
            "INSERT INTO billing_events (stripe_event_id, event_type, payload, stripe_created, "
            "outcome, received_at) VALUES (%(i)s, %(t)s, %(p)s, %(c)s, 'applied', now()) "
            "ON CONFLICT (stripe_event_id) DO NOTHING",
            {"i": event["id"], "t": event["type"], "p": payload, "c": event["created"]},
        ).rowcount
        if stored:
            _apply(conn, event)
    return {"outcome": "applied" if stored else "duplicate"}


@app.get("/readyz")
def ready() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    import uvicorn

    from meterbill.serving import NoDelayHttpToolsProtocol

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8800)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    uvicorn.run(
        "bench.floor:app",
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        log_level="warning",
        http=NoDelayHttpToolsProtocol,
    )


if __name__ == "__main__":
    main()
