"""The operator console's overview with 100,000 users and 10 M usage events, over HTTP,
beside two references measured in the same run: `GET /healthz` (the floor: HTTP and
uvicorn alone) and the top-consumers ranking computed the naive way, by a `SUM` over the
raw `consumption_log` (what the overview would cost without the monthly totals).

Everything is bulk-loaded by PostgreSQL itself (generate_series), not over HTTP: users,
subscriptions (some past due, some canceled this month), six months of invoices, Stripe
events (some unresolved), parked jobs, and the usage events with their daily and monthly
totals.

    .venv/bin/python -m bench.console --users 100000 --events 10000000
"""

from __future__ import annotations

import argparse
import re
import socket
import time
from datetime import UTC, datetime

import httpx
from sqlalchemy import text

from bench.common import PG_ADMIN, banner, fresh_database, meterbill, percentile
from meterbill.admin.service import create_admin
from meterbill.db import Database

PASSWORD = "bench password long enough"
DATABASE = "meterbill_bench_console"

_USERS = """
INSERT INTO saas_users (id, email, plan, locale, created_at, updated_at)
SELECT 'user-' || i, 'user' || i || '@example.com',
       CASE WHEN i % 10 < 2 THEN 'premium' WHEN i % 10 = 2 THEN 'pro' ELSE 'free' END,
       'fr', now() - interval '200 days', now()
FROM generate_series(1, :users) AS i
"""
_SUBSCRIPTIONS = """
INSERT INTO saas_subscriptions (user_id, plan, status, stripe_customer_id, stripe_subscription_id,
    stripe_price_id, start_date, end_date, current_period_end, grace_period_end,
    state_event_created, updated_at)
SELECT 'user-' || i, CASE WHEN i % 10 = 2 THEN 'pro' ELSE 'premium' END,
       CASE WHEN i % 97 = 0 THEN 'past_due' WHEN i % 89 = 0 THEN 'canceled' ELSE 'active' END,
       'cus_' || i, 'sub_' || i, 'price_x', now() - interval '150 days',
       CASE WHEN i % 89 = 0 THEN date_trunc('month', now()) + interval '1 hour' END,
       now() + interval '20 days',
       CASE WHEN i % 97 = 0 THEN now() + ((i % 72) || ' hours')::interval END,
       0, now()
FROM generate_series(1, :users) AS i WHERE i % 10 < 3
"""
_INVOICES = """
INSERT INTO invoices (invoice_number, kind, user_id, period, amount, amount_ht, amount_tva,
    currency, status, seller, issued_at)
SELECT 'FACT-' || replace(p.period, '-', '') || '-' || lpad(i::text, 6, '0'), 'invoice',
       'user-' || i, p.period, 1080, 900, 180, 'eur', 'paid', '{}',
       to_timestamp(p.period || '-05', 'YYYY-MM-DD')
FROM generate_series(1, :users) AS i,
     (SELECT to_char(date_trunc('month', now()) - (m || ' months')::interval, 'YYYY-MM')
      AS period FROM generate_series(0, 5) AS m) AS p
WHERE i % 10 < 3 AND (i + length(p.period)) % 7 <> 0
"""
_EVENTS = """
INSERT INTO billing_events (stripe_event_id, event_type, user_id, stripe_created, outcome,
    error, received_at)
SELECT 'evt_' || i, 'invoice.paid', CASE WHEN i % 50 = 0 THEN NULL ELSE 'user-' || i END, 0,
       CASE WHEN i % 50 = 0 THEN 'unresolved' ELSE 'applied' END,
       CASE WHEN i % 50 = 0 THEN 'no user for customer' END, now()
FROM generate_series(1, :users) AS i
"""
_JOBS = """
INSERT INTO jobs (kind, payload, status, attempts, max_attempts, run_at, created_at, last_error)
SELECT 'email.send', '{"user_id":"user-' || i || '","template":"invoice_issued"}',
       CASE WHEN i % 100 = 0 THEN 'failed' ELSE 'done' END, 1, 10, now(), now(),
       CASE WHEN i % 100 = 0 THEN 'SMTP 451' END
FROM generate_series(1, :users) AS i
"""
_USAGE = """
INSERT INTO consumption_log (event_id, user_id, metric, value, date, endpoint, received_at)
SELECT 'load-' || i, 'user-' || (1 + (i * 7919) % :users),
       CASE WHEN i % 3 = 0 THEN 'tokens' ELSE 'api_calls' END,
       CASE WHEN i % 3 = 0 THEN i % 1000 ELSE 1 END,
       :start + ((i * 104729) % :span) * interval '1 second', NULL, now()
FROM generate_series(CAST(:low AS bigint), CAST(:high AS bigint) - 1) AS i
"""
_ROLLUPS = [
    """INSERT INTO usage_daily (user_id, metric, day, total, events, peak)
       SELECT user_id, metric, (date AT TIME ZONE 'UTC')::date, sum(value), count(*), max(value)
       FROM consumption_log GROUP BY 1, 2, 3""",
    """INSERT INTO usage_monthly (user_id, metric, month, total, events, peak)
       SELECT user_id, metric, to_char(date AT TIME ZONE 'UTC', 'YYYY-MM'), sum(value), count(*),
              max(value)
       FROM consumption_log GROUP BY 1, 2, 3""",
]
_NAIVE_TOP = """
SELECT user_id, sum(value) FROM consumption_log
WHERE metric = 'api_calls' AND date >= :start GROUP BY user_id ORDER BY 2 DESC LIMIT 5
"""


def load(db: Database, users: int, events: int) -> float:
    began = time.perf_counter()
    now = datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    span = max(int((now - start).total_seconds()) - 120, 60)
    with db.engine.begin() as conn:
        for statement in (_USERS, _SUBSCRIPTIONS, _INVOICES, _EVENTS, _JOBS):
            conn.execute(text(statement), {"users": users})
    step = 2_000_000
    for low in range(0, events, step):
        with db.engine.begin() as conn:
            conn.execute(
                text(_USAGE),
                {
                    "low": low,
                    "high": min(low + step, events),
                    "users": users,
                    "start": start,
                    "span": span,
                },
            )
        print(f"  {min(low + step, events):,} usage events loaded", flush=True)
    with db.engine.begin() as conn:
        for statement in _ROLLUPS:
            conn.execute(text(statement))
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    return time.perf_counter() - began


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def signed_in_client(base: str, email: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30)
    form = client.get("/admin/sign-in").text
    match = re.search(r'name="csrf" value="([^"]+)"', form)
    assert match
    answer = client.post(
        "/admin/sign-in",
        data={"csrf": match.group(1), "email": email, "password": PASSWORD, "next": "/admin"},
    )
    assert answer.status_code == 303, answer.text
    return client


def timed(client: httpx.Client, path: str, count: int) -> list[float]:
    for _ in range(5):
        client.get(path).raise_for_status()
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    return samples


def naive_top(db: Database, count: int) -> list[float]:
    start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    samples = []
    with db.engine.connect() as conn:
        for _ in range(count):
            began = time.perf_counter()
            conn.execute(text(_NAIVE_TOP), {"start": start}).all()
            samples.append((time.perf_counter() - began) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument(
        "--reuse", action="store_true", help="Time again on the data the last run loaded."
    )
    args = parser.parse_args()
    banner("console overview", "postgresql")
    print(f"command: .venv/bin/python -m bench.console --users {args.users} --events {args.events}")
    if args.reuse:
        url = PG_ADMIN.rsplit("/", 1)[0] + "/" + DATABASE
        db, seconds = Database(url), 0.0
    else:
        url = fresh_database("postgresql", DATABASE)
        db = Database(url)
        seconds = load(db, args.users, args.events)
    with db.engine.connect() as conn:
        counts = {
            table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()  # noqa: S608
            for table in ("saas_users", "saas_subscriptions", "invoices", "consumption_log")
        }
    print(f"loaded in {seconds:.0f} s: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    with db.transaction() as session:
        if not args.reuse:
            create_admin(session, "bench@example.com", PASSWORD, datetime.now(UTC))
    with meterbill(url, workers=1, port=free_port()) as base:
        client = signed_in_client(base, "bench@example.com")
        floor = timed(client, "/healthz", args.requests)
        pages = {
            "/admin (overview)": timed(client, "/admin", args.requests),
            "/admin/users?q=user-4242": timed(client, "/admin/users?q=user-4242", args.requests),
            "/admin/users/user-7": timed(client, "/admin/users/user-7", args.requests),
            "/admin/invoices": timed(client, "/admin/invoices", args.requests),
        }
        client.close()
    naive = naive_top(db, 3)
    db.dispose()
    print("what | p50 ms | p95 ms | max ms")
    print(
        f"GET /healthz (floor) | {percentile(floor, 0.5):.2f} | "
        f"{percentile(floor, 0.95):.2f} | {max(floor):.2f}"
    )
    for name, samples in pages.items():
        print(
            f"GET {name} | {percentile(samples, 0.5):.2f} | {percentile(samples, 0.95):.2f} | "
            f"{max(samples):.2f}"
        )
    print(
        f"naive top consumers (SUM over consumption_log) | {percentile(naive, 0.5):.2f} | "
        f"{percentile(naive, 0.95):.2f} | {max(naive):.2f}"
    )
    overview = percentile(pages["/admin (overview)"], 0.95)
    verdict = "under" if overview < 200 else "OVER"
    print(f"overview p95 {overview:.1f} ms: {verdict} the 200 ms target")


if __name__ == "__main__":
    main()
