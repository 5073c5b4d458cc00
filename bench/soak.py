"""A mixed soak on PostgreSQL: batch ingestion, consume, consumption reads and signed Stripe
webhooks at once against `meterbill serve --workers 2` (2 API processes), with 2
`meterbill worker` processes sending the emails the webhooks cause to a local SMTP server
(aiosmtpd). Each operation runs at a fixed pace (flags) from its own client threads.

Every minute: per operation, how many ran, errors, p50 and p99. At the start (after a
warm-up) and at the end: resident memory and open files of each API and worker process.
At the end: errors must be zero, and the stored totals must equal what was sent (events
stored = new events ingested + consumes recorded; monthly totals agree; one billing event
per distinct webhook; no failed job once the workers have drained the queue).

Beside the soak's figures, the same run first measures each operation alone for a few
seconds (the reference: its p99 unloaded), so each minute's p99 reads as a ratio.

    .venv/bin/python -m bench.soak --minutes 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
from aiosmtpd.controller import Controller
from sqlalchemy import text

from bench.common import (
    JWT_SECRET,
    api_key,
    banner,
    free_port,
    fresh_database,
    meterbill,
    percentile,
)
from bench.webhooks import PREMIUM, PRO, SECRET, event, invoice, sign, subscription
from meterbill.db import Database

USERS = 200


class Inbox:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        await asyncio.sleep(0)
        return "250 OK"


class Stats:
    """Samples per operation and per minute."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.samples: dict[tuple[str, int], list[float]] = defaultdict(list)
        self.errors: dict[tuple[str, int], int] = defaultdict(int)
        self.error_examples: list[str] = []
        self.started = time.monotonic()

    def minute(self) -> int:
        return int((time.monotonic() - self.started) // 60)

    def add(self, op: str, took_ms: float, error: str | None) -> None:
        key = (op, self.minute())
        with self.lock:
            self.samples[key].append(took_ms)
            if error:
                self.errors[key] += 1
                if len(self.error_examples) < 10:
                    self.error_examples.append(f"{op}: {error}")


class Sent:
    """What the load generators had accepted, to compare with what is stored."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.new_events = 0
        self.consumed = 0
        self.webhooks: set[str] = set()


def paced(rate: float, stop: threading.Event, action: Callable[[], None]) -> None:
    """Run `action` `rate` times a second (no catching up after a slow call)."""
    interval = 1 / rate
    due = time.monotonic()
    while not stop.is_set():
        action()
        due = max(due + interval, time.monotonic() - interval)
        pause = due - time.monotonic()
        if pause > 0:
            stop.wait(pause)


def timed(stats: Stats, op: str, call: Callable[[], httpx.Response]) -> httpx.Response | None:
    began = time.perf_counter()
    try:
        answer = call()
    except httpx.HTTPError as exc:
        stats.add(op, (time.perf_counter() - began) * 1000, repr(exc))
        return None
    took = (time.perf_counter() - began) * 1000
    error = None if answer.status_code < 400 else f"{answer.status_code} {answer.text[:200]}"
    stats.add(op, took, error)
    return answer if error is None else None


def ingestion(
    base: str, key: str, stats: Stats, sent: Sent, stop: threading.Event, rate: float
) -> Callable[[], None]:
    def run() -> None:
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=60) as http:

            def one() -> None:
                now = datetime.now(UTC) - timedelta(seconds=1)
                tag = uuid.uuid4().hex[:12]
                events = [
                    {
                        "id": f"soak-{tag}-{i}",
                        "user_id": f"user-{random.randrange(USERS)}",
                        "metric": "api_calls" if i % 3 else "tokens",
                        "value": 1 if i % 3 else random.randrange(1, 100),
                        "timestamp": (now - timedelta(milliseconds=i)).isoformat(),
                    }
                    for i in range(1_000)
                ]
                events += random.sample(events, 50)  # a few repeated in the batch
                answer = timed(
                    stats,
                    "ingest",
                    lambda: http.post("/api/v1/usage/events", json={"events": events}),
                )
                if answer is not None:
                    with sent.lock:
                        sent.new_events += answer.json()["new"]

            paced(rate, stop, one)

    return run


def consuming(
    base: str, key: str, stats: Stats, sent: Sent, stop: threading.Event, rate: float
) -> Callable[[], None]:
    def run() -> None:
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=60) as http:

            def one() -> None:
                body = {"user_id": f"user-{random.randrange(USERS)}", "metric": "api_calls"}
                answer = timed(
                    stats, "consume", lambda: http.post("/api/v1/usage/consume", json=body)
                )
                if answer is not None and not answer.json().get("duplicate"):
                    with sent.lock:
                        sent.consumed += 1

            paced(rate, stop, one)

    return run


def reading(base: str, stats: Stats, stop: threading.Event, rate: float) -> Callable[[], None]:
    tokens = [
        jwt.encode({"sub": f"user-{n}", "exp": int(time.time()) + 86_400}, JWT_SECRET, "HS256")
        for n in range(USERS)
    ]

    def run() -> None:
        with httpx.Client(base_url=base, timeout=60) as http:

            def one() -> None:
                headers = {"Authorization": f"Bearer {random.choice(tokens)}"}
                timed(
                    stats, "read", lambda: http.get("/api/v1/billing/consumption", headers=headers)
                )

            paced(rate, stop, one)

    return run


def webhooks(
    base: str, stats: Stats, sent: Sent, stop: threading.Event, rate: float, prefix: str
) -> Callable[[], None]:
    """Customers one after the other: subscription created, invoice paid, plan changed; one
    delivery in ten is a redelivery of an earlier event."""

    def stream() -> Any:
        n = 0
        while True:
            user, customer, sub = f"{prefix}-user-{n}", f"cus_{prefix}{n}", f"sub_{prefix}{n}"
            created = int(time.time())
            yield event(
                "customer.subscription.created",
                subscription(sub, customer, user, PREMIUM, 900),
                created,
            )
            yield event(
                "invoice.paid",
                invoice(f"in_{prefix}{n}", customer, sub, f"pi_{prefix}{n}"),
                created + 1,
            )
            yield event(
                "customer.subscription.updated",
                subscription(sub, customer, user, PRO, 2900),
                created + 2,
            )
            n += 1

    def run() -> None:
        events = stream()
        earlier: list[bytes] = []
        with httpx.Client(base_url=base, timeout=60) as http:

            def one() -> None:
                if earlier and random.random() < 0.1:
                    body = random.choice(earlier)
                else:
                    item = next(events)
                    body = json.dumps(item, separators=(",", ":")).encode()
                    earlier.append(body)
                    with sent.lock:
                        sent.webhooks.add(item["id"])
                headers = {"Content-Type": "application/json", "Stripe-Signature": sign(body)}
                timed(
                    stats,
                    "webhook",
                    lambda: http.post("/api/v1/billing/webhook", content=body, headers=headers),
                )

            paced(rate, stop, one)

    return run


def drain(db: Database, seconds: float = 120) -> None:
    """Wait (bounded) until no job is queued or running."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with db.engine.connect() as conn:
            waiting = conn.execute(
                text("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')")
            ).scalar_one()
        if not waiting:
            return
        time.sleep(1)


def stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(30)


def children(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(p) for p in found]


def resources(pid: int) -> tuple[int, int]:
    """(resident memory in KiB, open file descriptors) of a process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def server_pid(port: int) -> int:
    """The `meterbill serve --port PORT` process (uvicorn's supervisor)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and str(port).encode() in argv:
            return int(entry.name)
    raise RuntimeError("meterbill's process not found")


def api_workers(parent: int) -> list[int]:
    """uvicorn's worker processes (not multiprocessing's resource tracker)."""
    return [
        pid
        for pid in children(parent)
        if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def snapshot(label: str, processes: dict[str, int]) -> dict[str, tuple[int, int]]:
    found = {name: resources(pid) for name, pid in processes.items()}
    for name, (rss, fds) in found.items():
        print(f"  {label:5} {name:10} RSS {rss / 1024:7.1f} MiB, open files {fds}", flush=True)
    return found


def report_minutes(stats: Stats, minutes: int, reference: dict[str, float]) -> None:
    ops = ("ingest", "consume", "read", "webhook")
    for minute in range(minutes):
        parts = []
        for op in ops:
            samples = stats.samples.get((op, minute), [])
            if not samples:
                continue
            p99 = percentile(samples, 0.99)
            parts.append(
                f"{op} {len(samples) / 60:6.1f}/s p50 {percentile(samples, 0.5):6.1f} "
                f"p99 {p99:6.1f} ms ({p99 / reference[op]:.1f}x) "
                f"err {stats.errors.get((op, minute), 0)}"
            )
        print(f"minute {minute + 1:2}: " + " | ".join(parts), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--ingest-rate", type=float, default=2, help="batches of 1,000 per s")
    parser.add_argument("--consume-rate", type=float, default=20, help="consumes per s")
    parser.add_argument("--read-rate", type=float, default=10, help="consumption reads per s")
    parser.add_argument("--webhook-rate", type=float, default=5, help="Stripe events per s")
    args = parser.parse_args()
    banner("mixed soak", "postgresql")
    url = fresh_database("postgresql", "meterbill_bench_soak")
    key = api_key(url)
    inbox = Inbox()
    smtp_port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    invoice_dir = tempfile.mkdtemp(prefix="meterbill-soak-invoices-")
    env = {
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_PRICE_PREMIUM": PREMIUM,
        "STRIPE_PRICE_PRO": PRO,
        "BILLING_LIMIT_FREE_API_CALLS": "1000000000",
        "METERBILL_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
        "METERBILL_INVOICE_DIR": invoice_dir,
        "METERBILL_SELLER_NAME": "Bench SAS",
        "METERBILL_SELLER_ADDRESS": "1 rue de la Paix;75002 Paris",
        "METERBILL_SELLER_EMAIL": "billing@bench.example",
        "METERBILL_SELLER_SIREN": "123456789",
        "METERBILL_SELLER_SIRET": "12345678900012",
        "METERBILL_SELLER_VAT_NUMBER": "FR32123456789",
        "METERBILL_SELLER_LEGAL_FORM": "SAS au capital de 1 000 €",
        "METERBILL_SELLER_RCS": "RCS Paris 123 456 789",
    }
    worker_env = {
        **os.environ,
        **env,
        "METERBILL_DATABASE_URL": url,
        "METERBILL_JWT_SECRET": JWT_SECRET,
        "METERBILL_LOG_LEVEL": "WARNING",
    }
    command = shutil.which("meterbill") or str(Path(sys.executable).parent / "meterbill")
    print(
        f"pace: ingestion {args.ingest_rate:g} batches/s of 1,000 (+50 repeats), consume "
        f"{args.consume_rate:g}/s, reads {args.read_rate:g}/s, webhooks {args.webhook_rate:g}/s; "
        f"{args.minutes:g} minutes; 2 API processes, 2 workers",
        flush=True,
    )
    stats, sent, stop = Stats(), Sent(), threading.Event()
    with ExitStack() as stack:
        base = stack.enter_context(meterbill(url, 2, None, **env))
        port = int(base.rsplit(":", 1)[1])
        workers = [
            subprocess.Popen(
                [command, "worker", "--no-schedules", "--id", f"soak-{n}"],
                env=worker_env,
                stdout=subprocess.DEVNULL,
            )
            for n in range(2)
        ]
        stack.callback(stop_processes, workers)
        # The reference: each operation alone, unloaded, for a few seconds.
        reference: dict[str, float] = {}
        for op in ("ingest", "consume", "read", "webhook"):
            alone = Stats()
            runs = {
                "ingest": ingestion(base, key, alone, Sent(), stop, args.ingest_rate),
                "consume": consuming(base, key, alone, Sent(), stop, args.consume_rate),
                "read": reading(base, alone, stop, args.read_rate),
                "webhook": webhooks(base, alone, Sent(), stop, args.webhook_rate, "ref"),
            }
            thread = threading.Thread(target=runs[op])
            thread.start()
            time.sleep(8)
            stop.set()
            thread.join()
            stop.clear()
            reference[op] = percentile([x for v in alone.samples.values() for x in v], 0.99)
        print(
            "reference p99, each operation alone: "
            + ", ".join(f"{op} {ms:.1f} ms" for op, ms in reference.items()),
            flush=True,
        )
        # The workers first do the reference phase's jobs (rendering its invoices' PDFs
        # loads WeasyPrint once): the start snapshot is of warm processes.
        drain(Database(url))
        processes = {"api-parent": server_pid(port)}
        processes |= {f"api-{n}": pid for n, pid in enumerate(api_workers(processes["api-parent"]))}
        processes |= {f"worker-{n}": w.pid for n, w in enumerate(workers)}
        start = snapshot("start", processes)
        # Totals are compared from here on: note what the reference phase stored.
        db = Database(url)
        with db.engine.connect() as conn:
            before_events = conn.execute(text("SELECT count(*) FROM consumption_log")).scalar_one()
            before_hooks = conn.execute(text("SELECT count(*) FROM billing_events")).scalar_one()
        threads = [
            threading.Thread(target=ingestion(base, key, stats, sent, stop, args.ingest_rate)),
            threading.Thread(target=consuming(base, key, stats, sent, stop, args.consume_rate / 2)),
            threading.Thread(target=consuming(base, key, stats, sent, stop, args.consume_rate / 2)),
            threading.Thread(target=reading(base, stats, stop, args.read_rate)),
            threading.Thread(target=webhooks(base, stats, sent, stop, args.webhook_rate, "soak")),
        ]
        stats.started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(args.minutes * 60)
        stop.set()
        for thread in threads:
            thread.join()
        drain(db)  # let the workers drain the queue (bounded)
        end = snapshot("end", processes)
        with db.engine.connect() as conn:
            events = conn.execute(text("SELECT count(*) FROM consumption_log")).scalar_one()
            monthly = conn.execute(text("SELECT sum(events) FROM usage_monthly")).scalar_one()
            hooks = conn.execute(text("SELECT count(*) FROM billing_events")).scalar_one()
            jobs: dict[str, int] = dict(
                conn.execute(text("SELECT status, count(*) FROM jobs GROUP BY 1")).all()
            )
        db.dispose()
    controller.stop()
    minutes = int(args.minutes + 0.999)
    report_minutes(stats, minutes, reference)
    errors = sum(stats.errors.values())
    totals = {op: sum(len(v) for (o, _), v in stats.samples.items() if o == op) for op in reference}
    print(f"operations: {totals}; errors: {errors} {stats.error_examples}")
    expected_events = before_events + sent.new_events + sent.consumed
    print(
        f"events stored {events:,} (expected {expected_events:,}); monthly totals count "
        f"{int(monthly or 0):,}; billing events {hooks} "
        f"(expected {before_hooks + len(sent.webhooks)}); "
        f"jobs {jobs}; emails received {inbox.count}"
    )
    growth = {
        name: (end[name][0] - start[name][0], end[name][1] - start[name][1]) for name in start
    }
    print(
        "growth start -> end (RSS KiB, open files): "
        + ", ".join(f"{name} {rss:+,} / {fds:+}" for name, (rss, fds) in growth.items())
    )
    ok = (
        errors == 0
        and events == expected_events
        and int(monthly or 0) == events
        and hooks == before_hooks + len(sent.webhooks)
        and not jobs.get("failed")
    )
    print(f"verdict: {'OK' if ok else 'FAILED'}")
    print(f"os.cpu_count() = {os.cpu_count()}")
    print("command: .venv/bin/python -m bench.soak " + " ".join(sys.argv[1:]))
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
