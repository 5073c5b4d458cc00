"""Ingestion throughput over HTTP: batches of 1,000 events with unique ids (idempotency on),
sent by several concurrent clients; then the same events again (all duplicates).

Beside it, in the same run and with as many concurrent connections, the raw path: the same
batches written straight into PostgreSQL (a fresh database with the same schema) by COPY into
a temporary table, `INSERT … ON CONFLICT DO NOTHING RETURNING` into `consumption_log` and a
daily rollup upsert from the returned rows, one transaction per batch, no HTTP and no
validation. meterbill's figures are printed as a share of it.

    .venv/bin/python -m bench.ingest --backend postgresql --events 300000 --clients 4
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
from datetime import UTC, datetime, timedelta

import orjson
import psycopg

from bench.common import api_key, banner, fresh_database, keep_alive, meterbill, run_threads

_RAW_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS raw_incoming (
    event_id text, user_id text, metric text, value bigint, ts timestamptz, endpoint text
) ON COMMIT DELETE ROWS
"""
_RAW_INSERT = """
WITH inserted AS (
    INSERT INTO consumption_log ({columns}, endpoint, received_at)
    SELECT event_id, user_id, metric, value, ts{month}, endpoint, now()
    FROM raw_incoming ORDER BY event_id
    ON CONFLICT DO NOTHING
    RETURNING user_id, metric, date, value
)
INSERT INTO usage_daily AS d (user_id, metric, day, total, events, peak)
SELECT user_id, metric, (date AT TIME ZONE 'UTC')::date, sum(value), count(*), max(value)
FROM inserted GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
ON CONFLICT (user_id, metric, day) DO UPDATE SET
    total = d.total + excluded.total, events = d.events + excluded.events,
    peak = greatest(d.peak, excluded.peak)
"""


def batches(
    total: int, size: int, users: int, spread: int = 600, tag: str = "bench"
) -> list[bytes]:
    now = datetime.now(UTC)
    bodies = []
    for start in range(0, total, size):
        events = [
            {
                "id": f"{tag}-{i:012d}",
                "user_id": f"user-{random.randrange(users)}",
                "metric": "api_calls" if i % 3 else "tokens",
                "value": 1 if i % 3 else random.randrange(1, 2000),
                "timestamp": (now - timedelta(seconds=random.randrange(spread))).isoformat(),
                "endpoint": "/v1/things",
            }
            for i in range(start, min(start + size, total))
        ]
        bodies.append(json.dumps({"events": events}).encode())
    return bodies


def send_all(base: str, key: str, bodies: list[bytes], clients: int) -> tuple[float, int, int]:
    queue = list(reversed(bodies))
    lock = threading.Lock()
    counts = {"new": 0, "duplicates": 0}

    def client() -> None:
        http = keep_alive(base)
        headers = {"X-API-Key": key, "Content-Type": "application/json"}
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                http.request("POST", "/api/v1/usage/events", body=body, headers=headers)
                answer = http.getresponse()
                content = answer.read()
                if answer.status >= 300:
                    raise RuntimeError(f"{answer.status}: {content[:200]!r}")
                counted = orjson.loads(content)
                with lock:
                    counts["new"] += counted["new"]
                    counts["duplicates"] += counted["duplicates"]
        finally:
            http.close()

    return run_threads(client, clients), counts["new"], counts["duplicates"]


Row = tuple[str, str, str, int, datetime, str | None]


def raw_rows(bodies: list[bytes]) -> list[list[Row]]:
    """The batches as rows ready to COPY (parsed before timing: the raw path does no work
    on the events)."""
    return [
        [
            (
                e["id"],
                e["user_id"],
                e["metric"],
                e["value"],
                datetime.fromisoformat(e["timestamp"]),
                e.get("endpoint"),
            )
            for e in orjson.loads(body)["events"]
        ]
        for body in bodies
    ]


def raw_send_all(url: str, batches: list[list[Row]], clients: int) -> float:
    """The raw path: each client COPies its batches and inserts them, one transaction each
    (the users exist beforehand)."""
    dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn) as conn:
        found = conn.execute(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'consumption_log' AND column_name = 'month'"
        ).fetchone()
        users = sorted({row[1] for batch in batches for row in batch})
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO saas_users (id, plan, created_at, updated_at) "
                "VALUES (%s, 'free', now(), now()) ON CONFLICT DO NOTHING",
                [(user,) for user in users],
            )
    has_month = bool(found and found[0])
    sql = _RAW_INSERT.format(
        columns="event_id, user_id, metric, value, date" + (", month" if has_month else ""),
        month=", date_trunc('month', ts AT TIME ZONE 'UTC')::date" if has_month else "",
    )
    queue = list(reversed(batches))
    lock = threading.Lock()

    def client() -> None:
        with psycopg.connect(dsn) as conn:
            conn.execute(_RAW_STAGE)
            conn.commit()
            while True:
                with lock:
                    if not queue:
                        return
                    rows = queue.pop()
                with conn.cursor() as cursor:
                    with cursor.copy(
                        "COPY raw_incoming (event_id, user_id, metric, value, ts, endpoint) "
                        "FROM STDIN"
                    ) as copy:
                        for row in rows:
                            copy.write_row(row)
                    cursor.execute(sql)
                conn.commit()

    return run_threads(client, clients)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3, help="raw/meterbill rounds (PostgreSQL)")
    parser.add_argument(
        "--spread", type=int, default=600, help="timestamps within this many seconds of now"
    )
    args = parser.parse_args()
    banner("ingestion", args.backend)
    url = fresh_database(args.backend, "meterbill_bench_ingest")
    key = api_key(url)
    bodies = batches(args.events, args.batch, args.users, args.spread)
    print(
        f"{args.events} events in batches of {args.batch}, {args.users} users, "
        f"{args.clients} clients, {args.workers} uvicorn workers, "
        f"timestamps within {args.spread} s of now",
        flush=True,
    )
    if args.backend == "sqlite":
        with meterbill(url, workers=args.workers) as base:
            send_all(base, key, bodies[:4], 2)  # warm up (counted again)
            elapsed, new, dups = send_all(base, key, bodies, args.clients)
            print(f"meterbill, new:   {args.events / elapsed:>10,.0f} events/s  ({elapsed:.1f} s)")
            elapsed, new, dups = send_all(base, key, bodies, args.clients)
            print(f"meterbill, dups:  {args.events / elapsed:>10,.0f} events/s  ({elapsed:.1f} s)")
        print("command: .venv/bin/python -m bench.ingest " + " ".join(sys.argv[1:]))
        return
    # PostgreSQL: rounds alternate the raw path and meterbill (each round new ids, then the
    # same ids again), so that load from elsewhere on the machine hits both alike.
    raw_url = fresh_database(args.backend, "meterbill_bench_ingest_raw")
    figures: dict[str, list[float]] = {"raw": [], "raw dups": [], "new": [], "dups": []}
    with meterbill(url, workers=args.workers) as base:
        send_all(base, key, batches(4_000, args.batch, args.users, args.spread, "warm"), 2)
        for round_ in range(args.rounds):
            bodies = batches(args.events, args.batch, args.users, args.spread, f"r{round_}")
            rows = raw_rows(bodies)
            first_raw = round_ % 2 == 0
            for side in ("raw", "meterbill") if first_raw else ("meterbill", "raw"):
                if side == "raw":
                    figures["raw"].append(args.events / raw_send_all(raw_url, rows, args.clients))
                    figures["raw dups"].append(
                        args.events / raw_send_all(raw_url, rows, args.clients)
                    )
                    continue
                elapsed, new, dups = send_all(base, key, bodies, args.clients)
                assert (new, dups) == (args.events, 0), (new, dups)
                figures["new"].append(args.events / elapsed)
                elapsed, new, dups = send_all(base, key, bodies, args.clients)
                assert (new, dups) == (0, args.events), (new, dups)
                figures["dups"].append(args.events / elapsed)
            print(
                f"round {round_ + 1}: new {figures['new'][-1]:,.0f}/s vs raw "
                f"{figures['raw'][-1]:,.0f}/s ({figures['new'][-1] / figures['raw'][-1]:.0%}); "
                f"duplicates {figures['dups'][-1]:,.0f}/s vs raw {figures['raw dups'][-1]:,.0f}/s "
                f"({figures['dups'][-1] / figures['raw dups'][-1]:.0%})",
                flush=True,
            )
    new_ratio = statistics.median(
        n / r for n, r in zip(figures["new"], figures["raw"], strict=True)
    )
    dup_ratio = statistics.median(
        n / r for n, r in zip(figures["dups"], figures["raw dups"], strict=True)
    )
    print(
        f"new events: meterbill {statistics.median(figures['new']):,.0f}/s, raw path "
        f"{statistics.median(figures['raw']):,.0f}/s (medians); median ratio {new_ratio:.0%} "
        "(floor 50 %)"
    )
    print(
        f"duplicates: meterbill {statistics.median(figures['dups']):,.0f}/s, raw path "
        f"{statistics.median(figures['raw dups']):,.0f}/s (medians); median ratio {dup_ratio:.0%}"
    )
    print("command: .venv/bin/python -m bench.ingest " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
