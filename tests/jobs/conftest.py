"""Fixtures for background work: a real SMTP server (aiosmtpd), a real HTTP receiver for
outgoing webhooks, in-process workers on a settable clock, and `meterbill worker`
processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from meterbill.config import Settings
from meterbill.db import Database
from meterbill.jobs.worker import Worker
from tests.conftest import Clock, base_settings, free_port

ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_SECRET = "mb_whsec_test"


# -- SMTP ----------------------------------------------------------------------------------


class _Inbox:
    """aiosmtpd handler that keeps every message it accepted; `hold_next` stalls the next
    session at RCPT until `release` (a slow server, to kill a worker while it sends)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.hold_next = threading.Event()
        self.release = threading.Event()
        self.sessions = 0

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.sessions += 1
        if address.startswith("bounce"):
            return "550 5.1.1 No such mailbox"
        if self.hold_next.is_set():
            self.hold_next.clear()
            while not self.release.is_set():
                await asyncio.sleep(0.02)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted for delivery"


@dataclass
class SmtpServer:
    port: int
    inbox: _Inbox = field(default_factory=_Inbox)
    controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.inbox.release.set()
            self.controller.stop()
            self.controller = None

    @property
    def messages(self) -> list[Message]:
        return self.inbox.messages


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """An SMTP server on a port of its own, running."""
    server = SmtpServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def smtp_down() -> Iterator[SmtpServer]:
    """A port where an SMTP server is not running yet (`.start()` brings it up)."""
    server = SmtpServer(free_port())
    yield server
    server.stop()


# -- webhook receiver -----------------------------------------------------------------------


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    answered: int | None = None

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


class Receiver:
    """A local HTTP server standing for the SaaS's backend."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.status = 200
        self.hold_next = threading.Event()  # the next request hangs until `release`
        self.release = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                delivery = Delivery({k.lower(): v for k, v in self.headers.items()}, body)
                with receiver.lock:
                    receiver.deliveries.append(delivery)
                    hold = receiver.hold_next.is_set()
                    receiver.hold_next.clear()
                if hold:
                    receiver.release.wait(30)
                    self.close_connection = True
                    return  # never answered: the sender died meanwhile
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                delivery.answered = receiver.status

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def acknowledged(self) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.answered and 200 <= d.answered < 300]

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


# -- workers --------------------------------------------------------------------------------


def job_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "webhook_secret": WEBHOOK_SECRET,
        "job_lease_seconds": 30.0,
        "app_base_url": "https://app.example.com",
        **overrides,
    }
    return base_settings(database_url, **values)


@dataclass
class Jobs:
    """An in-process worker on a clock the test moves, and its database."""

    settings: Settings
    db: Database
    clock: Clock
    worker: Worker

    def run(self, max_jobs: int | None = None) -> int:
        return self.worker.run_pending(max_jobs)

    def advance(self, **delta: float) -> None:
        from datetime import timedelta

        self.clock.fixed = self.clock() + timedelta(**delta)


@pytest.fixture
def make_jobs(database_url: str) -> Iterator[Callable[..., Jobs]]:
    made: list[Jobs] = []

    def make(clock: Clock | None = None, **overrides: Any) -> Jobs:
        settings = job_settings(database_url, **overrides)
        clock = clock or Clock()  # real time until a test moves it
        db = Database(database_url)
        jobs = Jobs(settings, db, clock, Worker(settings, db, clock=clock, schedules=()))
        made.append(jobs)
        return jobs

    yield make
    for jobs in made:
        jobs.db.dispose()


def worker_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "METERBILL_DATABASE_URL": database_url,
        "METERBILL_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "METERBILL_JOB_LEASE_SECONDS": "2",
        "METERBILL_WORKER_POLL_SECONDS": "0.05",
        "METERBILL_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT / "src"),
    }
    env.update(extra)
    return env


@pytest.fixture
def start_worker(database_url: str) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `meterbill worker` processes (no schedules); all are killed after the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, **env: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "meterbill", "worker", "--no-schedules", "--id", name],
            env=worker_env(database_url, **env),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


def wait_for(condition: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
