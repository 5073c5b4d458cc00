"""`POST /api/v1/usage/consume` (atomic check + record) with concurrent clients: throughput
and latency, across many users and with every client on one user (one lock).

    .venv/bin/python -m bench.consume --backend postgresql --clients 8 --requests 500
"""

from __future__ import annotations

import argparse
import random
import threading
import time

import httpx

from bench.common import api_key, banner, fresh_database, meterbill, percentile


def run(base: str, key: str, clients: int, requests: int, users: int) -> None:
    samples: list[float] = []
    codes: dict[int, int] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client() -> None:
        mine, mine_codes = [], {}
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=60) as http:
            http.get("/healthz")
            barrier.wait()
            for _ in range(requests):
                body = {"user_id": f"user-{random.randrange(users)}", "metric": "api_calls"}
                began = time.perf_counter()
                answer = http.post("/api/v1/usage/consume", json=body)
                mine.append((time.perf_counter() - began) * 1000)
                mine_codes[answer.status_code] = mine_codes.get(answer.status_code, 0) + 1
        with lock:
            samples.extend(mine)
            for code, n in mine_codes.items():
                codes[code] = codes.get(code, 0) + n

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    print(
        f"{clients} clients, {users:>4} user(s): {len(samples) / elapsed:7,.0f} consumes/s, "
        f"p50 {percentile(samples, 0.5):6.2f} ms, p99 {percentile(samples, 0.99):6.2f} ms, "
        f"answers {codes}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    banner("consume", args.backend)
    url = fresh_database(args.backend, "meterbill_bench_consume")
    key = api_key(url)
    limits = {"BILLING_LIMIT_FREE_API_CALLS": "1000000000"}
    with meterbill(url, workers=args.workers, **limits) as base:
        run(base, key, args.clients, 50, 1000)  # warm up
        run(base, key, args.clients, args.requests, 1000)
        run(base, key, args.clients, args.requests, 1)


if __name__ == "__main__":
    main()
