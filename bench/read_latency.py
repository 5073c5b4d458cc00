"""Consumption read latency over HTTP as stored events grow (10k, 1M, 10M), beside the
floor — a bare FastAPI endpoint (no auth) reading one row on the same stack (bench/floor.py)
— measured in turns in the same run, and beside the seed's raw `SUM` over `consumption_log`.

Events are loaded by the database itself (generate_series on PostgreSQL, a recursive CTE
on SQLite) and folded into the daily and monthly totals with one INSERT ... SELECT per
step, so 10M events load in minutes.

    .venv/bin/python -m bench.read_latency --backend postgresql --sizes 10000,1000000
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime

import httpx
import jwt
from sqlalchemy import text

from bench.common import JWT_SECRET, api_key, banner, floor, fresh_database, meterbill, percentile
from bench.floor import prepare
from meterbill.db import Database

USERS = 100
TARGET = "user-7"

_PG_EVENTS = """
INSERT INTO consumption_log
    (event_id, user_id, metric, value, date, month, endpoint, received_at)
SELECT 'load-' || lpad(i::text, 12, '0'), 'user-' || (i % :users),
       CASE WHEN i % 3 = 0 THEN 'tokens' ELSE 'api_calls' END,
       CASE WHEN i % 3 = 0 THEN i % 1000 ELSE 1 END,
       ts, date_trunc('month', ts AT TIME ZONE 'UTC')::date, '/v1/things', now()
FROM generate_series(CAST(:low AS bigint), CAST(:high AS bigint) - 1) AS i,
     LATERAL (SELECT :start + ((i * 7919) % :span) * interval '1 second' AS ts) AS t
"""
_SQLITE_EVENTS = """
WITH RECURSIVE seq(i) AS (SELECT :low UNION ALL SELECT i + 1 FROM seq WHERE i < :high - 1)
INSERT INTO consumption_log
    (event_id, user_id, metric, value, date, month, endpoint, received_at)
SELECT printf('load-%012d', i), 'user-' || (i % :users),
       CASE WHEN i % 3 = 0 THEN 'tokens' ELSE 'api_calls' END,
       CASE WHEN i % 3 = 0 THEN i % 1000 ELSE 1 END,
       strftime('%Y-%m-%d %H:%M:%S', :start_epoch + (i * 7919) % :span, 'unixepoch')
           || '.000000',
       strftime('%Y-%m-01', :start_epoch + (i * 7919) % :span, 'unixepoch'),
       '/v1/things', strftime('%Y-%m-%d %H:%M:%S.000000', 'now')
FROM seq
"""
_DAY = {
    "postgresql": "(date AT TIME ZONE 'UTC')::date",
    "sqlite": "substr(date, 1, 10)",
}
_MONTH = {
    "postgresql": "to_char(date AT TIME ZONE 'UTC', 'YYYY-MM')",
    "sqlite": "substr(date, 1, 7)",
}
_ROLLUP = """
INSERT INTO {table} AS r (user_id, metric, {column}, total, events, peak)
SELECT user_id, metric, {period}, sum(value), count(*), max(value)
FROM consumption_log WHERE id > :after GROUP BY 1, 2, 3
ON CONFLICT (user_id, metric, {column}) DO UPDATE SET
    total = r.total + excluded.total, events = r.events + excluded.events,
    peak = {greatest}(r.peak, excluded.peak)
"""
_SEED_SUM = """
SELECT COALESCE(SUM(value), 0) FROM consumption_log
WHERE user_id = :user AND metric = 'api_calls' AND date >= :start
"""


def load(db: Database, backend: str, low: int, high: int, start: datetime) -> float:
    """Add events [low, high) spread over this month so far, and their totals."""
    span = max(int((datetime.now(UTC) - start).total_seconds()) - 120, 60)
    began = time.perf_counter()
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO saas_users (id, plan, created_at, updated_at) "
                "SELECT 'user-' || :n, 'free', :now, :now ON CONFLICT DO NOTHING"
            ).bindparams(),
            [{"n": n, "now": datetime.now(UTC)} for n in range(USERS)],
        )
        after = conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM consumption_log")).scalar()
        params = {"low": low, "high": high, "users": USERS, "span": span}
        if backend == "postgresql":
            conn.execute(text(_PG_EVENTS), {**params, "start": start})
        else:
            conn.execute(text(_SQLITE_EVENTS), {**params, "start_epoch": int(start.timestamp())})
        greatest = "greatest" if backend == "postgresql" else "max"
        for table, column, period in (
            ("usage_daily", "day", _DAY[backend]),
            ("usage_monthly", "month", _MONTH[backend]),
        ):
            sql = _ROLLUP.format(table=table, column=column, period=period, greatest=greatest)
            conn.execute(text(sql), {"after": after})
    if backend == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE consumption_log, usage_daily, usage_monthly"))
    return time.perf_counter() - began


def http_latency(client: httpx.Client, path: str, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        client.get(path).raise_for_status()
        samples.append((time.perf_counter() - began) * 1000)
    return samples


def side_by_side(
    floor_base: str | None, base: str, token: str, key: str, requests: int, rounds: int
) -> dict[str, list[float]]:
    """The floor's one-row read, then consumption, then check, in turns (`rounds` times),
    one sequential client each; the samples of each."""
    clients = {
        "consumption": (
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}),
            "/api/v1/billing/consumption",
        ),
        "check": (
            httpx.Client(base_url=base, headers={"X-API-Key": key}),
            f"/api/v1/usage/check?user_id={TARGET}&metric=api_calls",
        ),
    }
    if floor_base:  # first in each round
        clients = {
            "floor": (httpx.Client(base_url=floor_base), f"/read?user_id={TARGET}"),
            **clients,
        }
    samples: dict[str, list[float]] = {name: [] for name in clients}
    for client, path in clients.values():  # warm up
        http_latency(client, path, 50)
    for _ in range(rounds):
        for name, (client, path) in clients.items():
            samples[name] += http_latency(client, path, requests // rounds)
    for client, _ in clients.values():
        client.close()
    return samples


def seed_sum_latency(db: Database, start: datetime, count: int) -> tuple[list[float], int]:
    samples, total = [], 0
    with db.engine.connect() as conn:
        for _ in range(count):
            began = time.perf_counter()
            total = int(conn.execute(text(_SEED_SUM), {"user": TARGET, "start": start}).scalar())
            samples.append((time.perf_counter() - began) * 1000)
    return samples, total


def figures(samples: list[float], floor_p99: float) -> str:
    p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
    return f"{p50:6.2f} / {p99:6.2f} ({p99 / floor_p99:4.2f}x)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--sizes", default="10000,1000000,10000000")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    banner("consumption read latency beside the floor's one-row read", args.backend)
    print("command:", " ".join(["python", "-m", "bench.read_latency", *sys.argv[1:]]))
    url = fresh_database(args.backend, "meterbill_bench_read")
    key = api_key(url)
    db = Database(url)
    now = datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    token = jwt.encode({"sub": TARGET, "exp": int(time.time()) + 86_400}, JWT_SECRET, "HS256")
    stored = 0
    if args.backend == "postgresql":
        prepare(url, USERS, 10**12)
    print(
        "events | load s | floor p50/p99 ms | consumption p50/p99 ms (p99 / floor's) "
        "| check p50/p99 ms (p99 / floor's) | seed SUM p50/p99 ms"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        seconds = load(db, args.backend, stored, size, start)
        stored = size
        with meterbill(url, workers=args.workers) as base:
            if args.backend == "postgresql":
                with floor(url, workers=args.workers) as floor_base:
                    samples = side_by_side(floor_base, base, token, key, args.requests, args.rounds)
            else:  # the floor app is PostgreSQL's: SQLite's figures have no floor beside them
                samples = side_by_side(None, base, token, key, args.requests, args.rounds)
                samples["floor"] = [float("nan")]
            body = httpx.get(
                f"{base}/api/v1/billing/consumption", headers={"Authorization": f"Bearer {token}"}
            ).json()
        seed, seed_total = seed_sum_latency(db, start, 20 if size <= 1_000_000 else 5)
        assert body["consumption"]["total_api_calls"] == seed_total, (body, seed_total)
        floor_p99 = percentile(samples["floor"], 0.99)
        print(
            f"{size:>10,} | {seconds:6.1f} | "
            f"{percentile(samples['floor'], 0.5):6.2f} / {floor_p99:6.2f} | "
            f"{figures(samples['consumption'], floor_p99)} | "
            f"{figures(samples['check'], floor_p99)} | "
            f"{percentile(seed, 0.5):8.2f} / {percentile(seed, 0.99):8.2f}",
            flush=True,
        )
    db.dispose()


if __name__ == "__main__":
    main()
