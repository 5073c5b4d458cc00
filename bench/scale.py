"""The raw log as it grows (PostgreSQL): ingestion rate and consumption read latency on an
almost empty log, then again once `--events` events are stored; and bytes on disk per event.

The log is filled with `generate_series` (not HTTP), `--chunk` events per statement (its
two indexes dropped during the load and rebuilt after it, the daily and monthly totals then
computed from every stored event); event times run from `--months` months ago to now in the
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
INSERT INTO consumption_log (event_id, user_id, metric, value, date, month, endpoint, received_at)
SELECT 'fill-' || i, 'user-' || (i % :users),
       CASE WHEN i % 3 = 0 THEN 'tokens' ELSE 'api_calls' END,
       CASE WHEN i % 3 = 0 THEN i % 1000 + 1 ELSE 1 END,
       ts, date_trunc('month', ts AT TIME ZONE 'UTC')::date, '/v1/things', ts
FROM generate_series(CAST(:low AS bigint), CAST(:high AS bigint) - 1) AS i,
     LATERAL (SELECT CAST(:start AS timestamptz)
                     + (i * :step) * interval '1 microsecond' AS ts) AS t
"""
# The bulk load runs without the log's two indexes (rebuilt after it, as any bulk load
# would), then the daily and monthly totals are computed from every stored event.
_DROP_KEYS = """
ALTER TABLE consumption_log DROP CONSTRAINT uq_consumption_log_event,
    DROP CONSTRAINT pk_consumption_log
"""
_ADD_KEYS = [
    "ALTER TABLE consumption_log ADD CONSTRAINT pk_consumption_log PRIMARY KEY (id, month)",
    "ALTER TABLE consumption_log ADD CONSTRAINT uq_consumption_log_event "
    "UNIQUE (user_id, event_id, month)",
]
_TOTALS = [
    "TRUNCATE usage_daily, usage_monthly",
    "INSERT INTO usage_daily (user_id, metric, day, total, events, peak) "
    "SELECT user_id, metric, (date AT TIME ZONE 'UTC')::date, sum(value), count(*), max(value) "
    "FROM consumption_log GROUP BY 1, 2, 3",
    "INSERT INTO usage_monthly (user_id, metric, month, total, events, peak) "
    "SELECT user_id, metric, to_char(day, 'YYYY-MM'), sum(total), sum(events), max(peak) "
    "FROM usage_daily GROUP BY 1, 2, 3",
]
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


def ingest_round(base: str, key: str, args: argparse.Namespace) -> float:
    bodies = probe_batches(args.probe, uuid.uuid4().hex[:12])
    elapsed, new, _dups = send_all(base, key, bodies, args.clients)
    assert new == args.probe, (new, args.probe)
    return float(args.probe) / elapsed


def read_pairs(bases: list[str], token: str, count: int) -> list[list[float]]:
    """Consumption reads alternating between the servers, one request each in turn."""
    samples: list[list[float]] = [[] for _ in bases]
    headers = {"Authorization": f"Bearer {token}"}
    clients = [httpx.Client(base_url=base, headers=headers) for base in bases]
    try:
        for _ in range(50):
            for client in clients:
                client.get("/api/v1/billing/consumption").raise_for_status()
        for _ in range(count):
            for client, mine in zip(clients, samples, strict=True):
                began = time.perf_counter()
                client.get("/api/v1/billing/consumption").raise_for_status()
                mine.append((time.perf_counter() - began) * 1000)
    finally:
        for client in clients:
            client.close()
    return samples


def stored(db: Database) -> tuple[int, int]:
    """(events stored, bytes of the log's partitions with their indexes and TOAST)."""
    with db.engine.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM consumption_log")).scalar_one()
        size = conn.execute(text(_SIZE)).scalar_one()
    return int(count), int(size)


def prepare(name: str, args: argparse.Namespace, start: datetime, end: datetime) -> str:
    """A migrated database holding `--small` or `--events` events, their totals, analyzed."""
    url = fresh_database("postgresql", name)
    db = Database(url)
    now = datetime.now(UTC)
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO saas_users (id, plan, created_at, updated_at) "
                "SELECT 'user-' || n, 'free', now(), now() FROM generate_series(0, :last) n"
            ),
            {"last": USERS - 1},
        )
    month = start
    while month < now:  # every month the events span gets its partition
        create_partitions_ahead(db.engine, month + timedelta(days=35))
        month += timedelta(days=28)
    total = args.events if name.endswith("big") else args.small
    began = time.perf_counter()
    with db.engine.begin() as conn:
        conn.execute(text(_DROP_KEYS))
    done = 0
    while done < total:
        high = min(done + args.chunk, total)
        fill(db, done, high, total, start, end)
        done = high
        if total > args.small:
            rate = done / (time.perf_counter() - began)
            print(f"  filled {done:,} ({rate:,.0f} events/s)", flush=True)
    for statement in [*_ADD_KEYS, *_TOTALS]:
        with db.engine.begin() as conn:
            conn.execute(text("SET maintenance_work_mem = '512MB'"))
            conn.execute(text(statement))
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE consumption_log, usage_daily, usage_monthly"))
    print(
        f"  {name}: {total:,} events stored, indexes and totals rebuilt "
        f"({time.perf_counter() - began:,.0f} s)",
        flush=True,
    )
    db.dispose()
    return url


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000_000, help="events to store")
    parser.add_argument("--small", type=int, default=10_000, help="the reference log's size")
    parser.add_argument("--months", type=int, default=12, help="months the events span")
    parser.add_argument("--chunk", type=int, default=2_000_000, help="events per statement")
    parser.add_argument("--probe", type=int, default=40_000, help="events per ingestion round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--reads", type=int, default=2_000)
    args = parser.parse_args()
    banner("raw log at scale", "postgresql")
    now = datetime.now(UTC)
    start = datetime.combine(add_months(month_start(now), 1 - args.months), now.timetz())
    end = now - timedelta(minutes=10)
    print(
        f"{USERS} users; {args.events:,} events over {args.months} months beside "
        f"{args.small:,} in another database; probes alternate between them: {args.rounds} "
        f"rounds of {args.probe:,} new events over HTTP from {args.clients} clients "
        f"(2 uvicorn workers each), {args.reads} consumption reads each",
        flush=True,
    )
    urls = [
        prepare(name, args, start, end)
        for name in ("meterbill_bench_scale_small", "meterbill_bench_scale_big")
    ]
    token = jwt.encode({"sub": TARGET, "exp": int(time.time()) + 86_400}, JWT_SECRET, "HS256")
    keys = [api_key(url) for url in urls]
    rates: list[list[float]] = [[], []]
    with meterbill(urls[0], workers=2) as small, meterbill(urls[1], workers=2) as big:
        bases = [small, big]
        for round_ in range(args.rounds):
            order = (0, 1) if round_ % 2 == 0 else (1, 0)
            for side in order:
                rates[side].append(ingest_round(bases[side], keys[side], args))
            print(
                f"  round {round_ + 1}: small {rates[0][-1]:,.0f} events/s, "
                f"big {rates[1][-1]:,.0f} events/s",
                flush=True,
            )
        small_reads, big_reads = read_pairs(bases, token, args.reads)
    (small_count, _), (count, size) = (stored(Database(url)) for url in urls)
    small_rate, big_rate = statistics.median(rates[0]), statistics.median(rates[1])
    small_p99, big_p99 = percentile(small_reads, 0.99), percentile(big_reads, 0.99)
    print(f"os.cpu_count() = {os.cpu_count()}")
    print(
        f"ingestion at {count:,} stored: {big_rate:,.0f} events/s = {big_rate / small_rate:.0%} "
        f"of the rate at {small_count:,} ({small_rate:,.0f} events/s) (medians; floor 80 %)"
    )
    print(
        f"consumption read at {count:,}: p50 {percentile(big_reads, 0.5):.2f} ms, p99 "
        f"{big_p99:.2f} ms = {big_p99 / small_p99:.2f}x the p99 at {small_count:,} "
        f"(p50 {percentile(small_reads, 0.5):.2f} ms, p99 {small_p99:.2f} ms; ceiling 1.2x)"
    )
    print(f"bytes on disk per stored event: {size / count:,.0f} ({size / 2**30:.2f} GiB)")
    print("command: .venv/bin/python -m bench.scale " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
