"""Ingestion throughput over HTTP: batches of 1,000 events with unique ids (idempotency on),
sent by several concurrent clients; then the same events again (all duplicates).

    .venv/bin/python -m bench.ingest --backend postgresql --events 300000 --clients 4
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx

from bench.common import api_key, banner, fresh_database, meterbill


def batches(total: int, size: int, users: int, spread: int = 600) -> list[bytes]:
    now = datetime.now(UTC)
    bodies = []
    for start in range(0, total, size):
        events = [
            {
                "id": f"bench-{i:012d}",
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
        with httpx.Client(base_url=base, timeout=120, headers={"X-API-Key": key}) as http:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                answer = http.post(
                    "/api/v1/usage/events",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
                answer.raise_for_status()
                with lock:
                    counts["new"] += answer.json()["new"]
                    counts["duplicates"] += answer.json()["duplicates"]

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, counts["new"], counts["duplicates"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--users", type=int, default=500)
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
    with meterbill(url, workers=args.workers) as base:
        send_all(base, key, bodies[:4], 2)  # warm up: connections, temp tables (counted again)
        elapsed, new, dups = send_all(base, key, bodies, args.clients)
        print(f"new events:       {args.events / elapsed:>10,.0f} events/s  ({elapsed:.1f} s)")
        print(f"  answers: new={new} duplicates={dups}")
        elapsed, new, dups = send_all(base, key, bodies, args.clients)
        print(f"all duplicates:   {args.events / elapsed:>10,.0f} events/s  ({elapsed:.1f} s)")
        print(f"  answers: new={new} duplicates={dups}")


if __name__ == "__main__":
    main()
