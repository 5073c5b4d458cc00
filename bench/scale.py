"""The raw log as it grows (PostgreSQL): ingestion rate and consumption read latency on an
almost empty log, then again once `--events` events are stored; and bytes on disk per event.

The log is filled with `generate_series` (not HTTP), `--chunk` events per statement, with
their daily and monthly totals; event times run from `--months` months ago to now in the
order they are inserted (as a live system stores them), so the current month's partition
holds about 1/`--months` of them. Measurements go through meterbill over HTTP (2 uvicorn
workers): ingestion is `--rounds` rounds of `--probe` new events in batches of 1,000 from
`--clients` clients (the median round counts), and the read is
`GET /api/v1/billing/consumption` from one client (`--reads` requests). The figure at size
N is printed beside the same figure measured on the small log in the same run.

    .venv/bin/python -m bench.scale --events 100000000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import jwt
from sqlalchemy import text

from bench.common import JWT_SECRET, api_key, banner, fresh_database, meterbill, percentile
from bench.ingest import send_all
from meterbill.db import Database
from meterbill.usage.partitions import add_months, create_partitions_ahead, month_start

USERS = 1_000
TARGET = "user-7"

_FILL = """
WITH inserted AS (
    INSERT INTO consumption_log
        (event_id, user_id, metric, value, date, month, endpoint, received_at)
    SELECT 'fill-' || i, 'user-' || (i % :users),
           CASE WHEN i % 3 = 0 THEN 'tokens' ELSE 'api_calls' END,
           CASE WHEN i % 3 = 0 THEN i % 1000 + 1 ELSE 1 END,
           ts, date_trunc('month', ts AT TIME ZONE 'UTC')::date, '/v1/things', ts
    FROM generate_series(CAST(:low AS bigint), CAST(:high AS bigint) - 1) AS i,
         LATERAL (SELECT CAST(:start AS timestamptz)
                         + (i * :step) * interval '1 microsecond' AS ts) AS t
    RETURNING user_id, metric, date, value
), days AS (
    INSERT INTO usage_daily AS d (user_id, metric, day, total, events, peak)
    SELECT user_id, metric, (date AT TIME ZONE 'UTC')::date, sum(value), count(*), max(value)
    FROM inserted GROUP BY 1, 2, 3
    ON CONFLICT (user_id, metric, day) DO UPDATE SET total = d.total + excluded.total,
        events = d.events + excluded.events, peak = greatest(d.peak, excluded.peak)
)
INSERT INTO usage_monthly AS m (user_id, metric, month, total, events, peak)
SELECT user_id, metric, to_char(date AT TIME ZONE 'UTC', 'YYYY-MM'), sum(value), count(*),
       max(value)
FROM inserted GROUP BY 1, 2, 3
ON CONFLICT (user_id, metric, month) DO UPDATE SET total = m.total + excluded.total,
    events = m.events + excluded.events, peak = greatest(m.peak, excluded.peak)
"""
_SIZE = """
SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('consumption_log')
"""


def fill(db: Database, low: int, high: int, total: int, start: datetime, end: datetime) -> None:
    """Store events [low, high) of `total`, event i at start + i/total of the span."""
    step = int((end - start).total_seconds() * 1_000_000) // total
    with db.engine.begin() as conn:
        conn.execute(
            text(_FILL),
            {"low": low, "high": high, "users": USERS, "start": start, "step": step},
        )


def probe_batches(events: int, tag: str) -> list[bytes]:
    now = datetime.now(UTC) - timedelta(seconds=30)
    bodies = []
    for first in range(0, events, 1_000):
        batch = [
            {
                "id": f"{tag}-{i:09d}",
                "user_id": f"user-{i * 7 % USERS}",
                "metric": "api_calls" if i % 3 else "tokens",
                "value": 1 if i % 3 else i % 1000 + 1,
                "timestamp": (now - timedelta(milliseconds=i)).isoformat(),
                "endpoint": "/v1/things",
            }
            for i in range(first, min(first + 1_000, events))
        ]
        bodies.append(json.dumps({"events": batch}).encode())
    return bodies


def measure(base: str, key: str, token: str, args: argparse.Namespace) -> tuple[float, float]:
    """(median ingestion rate in events/s, consumption read p99 in ms)."""
    rates = []
    for _ in range(args.rounds):
        bodies = probe_batches(args.probe, uuid.uuid4().hex[:12])
        elapsed, new, _dups = send_all(base, key, bodies, args.clients)
        assert new == args.probe, (new, args.probe)
        rates.append(args.probe / elapsed)
    samples = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
        for _ in range(50):
            client.get("/api/v1/billing/consumption").raise_for_status()
        for _ in range(args.reads):
            began = time.perf_counter()
            client.get("/api/v1/billing/consumption").raise_for_status()
            samples.append((time.perf_counter() - began) * 1000)
    print(
        f"  ingestion rounds: {', '.join(f'{r:,.0f}' for r in rates)} events/s; "
        f"consumption p50 {percentile(samples, 0.5):.2f} ms, "
        f"p99 {percentile(samples, 0.99):.2f} ms",
        flush=True,
    )
    return statistics.median(rates), percentile(samples, 0.99)


def stored(db: Database) -> tuple[int, int]:
    """(events stored, bytes of the log's partitions with their indexes and TOAST)."""
    with db.engine.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM consumption_log")).scalar_one()
        size = conn.execute(text(_SIZE)).scalar_one()
    return int(count), int(size)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000_000, help="events to store")
    parser.add_argument("--small", type=int, default=10_000, help="the reference log's size")
    parser.add_argument("--months", type=int, default=12, help="months the events span")
    parser.add_argument("--chunk", type=int, default=2_000_000, help="events per statement")
    parser.add_argument("--probe", type=int, default=40_000, help="events per ingestion round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--reads", type=int, default=1_000)
    args = parser.parse_args()
    banner("raw log at scale", "postgresql")
    url = fresh_database("postgresql", "meterbill_bench_scale")
    key = api_key(url)
    db = Database(url)
    now = datetime.now(UTC)
    start = datetime.combine(add_months(month_start(now), 1 - args.months), now.timetz())
    end = now - timedelta(minutes=10)
    with db.engine.begin() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cursor:
            cursor.execute(
                "INSERT INTO saas_users (id, plan, created_at, updated_at) "
                "SELECT 'user-' || n, 'free', now(), now() FROM generate_series(0, %s) n",
                (USERS - 1,),
            )
    month = start
    while month < now:  # every month the events span gets its partition
        create_partitions_ahead(db.engine, month + timedelta(days=35))
        month += timedelta(days=28)
    token = jwt.encode({"sub": TARGET, "exp": int(time.time()) + 86_400}, JWT_SECRET, "HS256")
    total = args.events
    fill(db, 0, args.small, total, start, end)
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE consumption_log, usage_daily, usage_monthly"))
    print(
        f"{USERS} users; {total:,} events over {args.months} months; probes: {args.rounds} x "
        f"{args.probe:,} events over HTTP from {args.clients} clients (2 uvicorn workers); "
        f"{args.reads} consumption reads",
        flush=True,
    )
    with meterbill(url, workers=2) as base:
        print(f"at {stored(db)[0]:,} stored:", flush=True)
        small_rate, small_p99 = measure(base, key, token, args)
    began = time.perf_counter()
    done = args.small
    while done < total:
        high = min(done + args.chunk, total)
        fill(db, done, high, total, start, end)
        done = high
        rate = (done - args.small) / (time.perf_counter() - began)
        print(f"  filled {done:,} ({rate:,.0f} events/s)", flush=True)
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE consumption_log, usage_daily, usage_monthly"))
    count, size = stored(db)
    with meterbill(url, workers=2) as base:
        print(f"at {count:,} stored:", flush=True)
        big_rate, big_p99 = measure(base, key, token, args)
    count, size = stored(db)
    print(f"os.cpu_count() = {os.cpu_count()}")
    print(
        f"ingestion at {count:,} stored: {big_rate:,.0f} events/s = {big_rate / small_rate:.0%} "
        f"of the rate at {args.small:,} ({small_rate:,.0f} events/s; floor 80 %)"
    )
    print(
        f"consumption read p99 at {count:,}: {big_p99:.2f} ms = {big_p99 / small_p99:.2f}x "
        f"its p99 at {args.small:,} ({small_p99:.2f} ms; ceiling 1.2x)"
    )
    print(f"bytes on disk per stored event: {size / count:,.0f} ({size / 2**30:.2f} GiB)")
    print("command: .venv/bin/python -m bench.scale " + " ".join(sys.argv[1:]))
    db.dispose()


if __name__ == "__main__":
    main()
