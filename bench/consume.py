"""`POST /api/v1/usage/consume` (atomic check + record) beside its floor, in one run.

The floor (bench/floor.py) is a bare FastAPI endpoint on the same uvicorn, pool and driver
that runs one PostgreSQL transaction: a conditional `UPDATE … RETURNING` and the event's
idempotent insert. Both are served at once (2 workers each) and measured alternately, in
rounds, by the same clients (8 threads, 1,000 users, a fresh id per request), so both see
the same machine load. Prints each side's throughput and p50/p99, and the ratios.

    .venv/bin/python -m bench.consume --clients 8 --requests 300 --rounds 4
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx

from bench.common import api_key, banner, floor, fresh_database, meterbill, percentile
from bench.floor import prepare


@dataclass
class Tally:
    samples: list[float] = field(default_factory=list)
    seconds: float = 0.0
    codes: dict[int, int] = field(default_factory=dict)

    def rate(self) -> float:
        return len(self.samples) / self.seconds

    def line(self, name: str) -> str:
        p50, p99 = percentile(self.samples, 0.5), percentile(self.samples, 0.99)
        codes = dict(sorted(self.codes.items()))
        return (
            f"{name:>10}: {self.rate():7,.0f} consumes/s, p50 {p50:6.2f} ms, "
            f"p99 {p99:6.2f} ms, answers {codes}"
        )


def run(
    base: str, path: str, headers: dict[str, str], clients: int, requests: int, users: int
) -> Tally:
    """`clients` threads, each sending `requests` consumes; one round's figures."""
    tally = Tally()
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client() -> None:
        mine: list[float] = []
        codes: dict[int, int] = {}
        with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
            http.get("/readyz")
            barrier.wait()
            for _ in range(requests):
                body = {
                    "user_id": f"user-{random.randrange(users)}",
                    "metric": "api_calls",
                    "id": uuid.uuid4().hex,
                }
                began = time.perf_counter()
                answer = http.post(path, json=body)
                mine.append((time.perf_counter() - began) * 1000)
                codes[answer.status_code] = codes.get(answer.status_code, 0) + 1
        with lock:
            tally.samples.extend(mine)
            for code, n in codes.items():
                tally.codes[code] = tally.codes.get(code, 0) + n

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    tally.seconds = time.perf_counter() - began
    return tally


def merge(into: Tally, part: Tally) -> None:
    into.samples.extend(part.samples)
    into.seconds += part.seconds
    for code, n in part.codes.items():
        into.codes[code] = into.codes.get(code, 0) + n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=300, help="per client and round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    banner("consume beside its floor", "postgresql")
    print(
        "command:",
        " ".join([os.path.basename(sys.executable), "-m", "bench.consume", *sys.argv[1:]]),
    )
    url = fresh_database("postgresql", "meterbill_bench_consume")
    key = api_key(url)
    prepare(url, args.users, 10**12)
    limits = {"BILLING_LIMIT_FREE_API_CALLS": str(10**12)}
    sides = {
        "floor": ("/consume", {}),
        "meterbill": ("/api/v1/usage/consume", {"X-API-Key": key}),
    }
    totals = {name: Tally() for name in sides}
    with (
        floor(url, workers=args.workers) as floor_base,
        meterbill(url, workers=args.workers, **limits) as meterbill_base,
    ):
        bases = {"floor": floor_base, "meterbill": meterbill_base}
        for name, (path, headers) in sides.items():  # warm up: pools, caches, users
            run(bases[name], path, headers, args.clients, 50, args.users)
        for round_ in range(args.rounds):
            order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
            for name in order:
                path, headers = sides[name]
                part = run(bases[name], path, headers, args.clients, args.requests, args.users)
                print(f"round {round_ + 1} " + part.line(name), flush=True)
                merge(totals[name], part)
    print(f"{args.clients} clients, {args.users} users, {args.workers} workers each:")
    for name, tally in totals.items():
        print(tally.line(name))
    base, ours = totals["floor"], totals["meterbill"]
    print(
        f"meterbill / floor: throughput {ours.rate() / base.rate():.2f}x (target >= 0.50), "
        f"p99 {percentile(ours.samples, 0.99) / percentile(base.samples, 0.99):.2f}x "
        "(target <= 2.00)"
    )


if __name__ == "__main__":
    main()
