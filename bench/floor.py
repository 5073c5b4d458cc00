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

    FLOOR_DATABASE_URL=postgresql://… .venv/bin/python -m bench.floor --port 8800 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
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


@app.post("/webhook")
async def webhook(request: Request, response: Response) -> dict[str, Any]:
    payload = (await request.body()).decode()
    try:
        stripe.WebhookSignature.verify_header(
            payload,
            request.headers.get("stripe-signature", ""),
            os.environ.get("FLOOR_WEBHOOK_SECRET", ""),
            300,
        )
    except stripe.SignatureVerificationError:
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
