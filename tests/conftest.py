"""Shared fixtures: a fresh database per test (SQLite, and PostgreSQL when
METERBILL_TEST_POSTGRES_URL is set), the service on a real port, a Stripe peer, tokens."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from meterbill.app import create_app
from meterbill.cli import main as meterbill_main
from meterbill.config import Settings
from meterbill.db import Database
from meterbill.migrate import upgrade
from meterbill.models import Base
from tests.stripe_peer import StripePeer, sign_payload, start_stripe_peer

POSTGRES_URL = os.environ.get("METERBILL_TEST_POSTGRES_URL", "")
BACKENDS = ["sqlite", *(["postgresql"] if POSTGRES_URL else [])]
JWT_SECRET = "test-jwt-secret-that-is-long-enough-for-hs256"
# The seller's identity French law requires on invoices: without it none is numbered.
TEST_SELLER = {
    "seller_name": "Nuage Conseil SAS",
    "seller_address": "12 rue de la Paix;75002 Paris",
    "seller_siren": "812345678",
    "seller_siret": "81234567800021",
    "seller_vat_number": "FR40812345678",
}
WEBHOOK_SECRET = "whsec_test_secret"


def _pg_url(database: str) -> str:
    base = POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    return base.rsplit("/", 1)[0] + "/" + database


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`scripts/test` runs `-n auto --dist loadgroup`), the browser tests
    stay together on one worker: one Chromium for all of them, and Playwright's event loop is
    closed before that worker runs anything else (tests/console/conftest.py)."""
    console = Path(__file__).parent / "console"
    for item in items:
        if console in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("console"))


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A PostgreSQL database of its own for this test run, migrated, dropped at the end."""
    if not POSTGRES_URL:
        pytest.skip("METERBILL_TEST_POSTGRES_URL not set")
    name = f"meterbill_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(_pg_url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = _pg_url(name)
    db = Database(url)
    upgrade(db.engine)
    db.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :n AND pid <> pg_backend_pid()"
            ),
            {"n": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies, instead of migrating again."""
    path = tmp_path_factory.mktemp("template") / "meterbill.db"
    db = Database(f"sqlite:///{path}")
    upgrade(db.engine)
    db.dispose()  # the last connection to close folds the WAL into the file
    return path


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated, empty database for one test, on each backend."""
    if request.param == "sqlite":
        target = tmp_path / "meterbill.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite:///{target}"
    url: str = request.getfixturevalue("postgres_database")
    engine = create_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


def run_meterbill(
    *args: str, env: dict[str, str | None], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`meterbill ARGS` in this process, through the console script's own `main` (its
    one-line errors and exit codes), with these environment changes (None removes one) and
    this stdin; what a process would have printed. Tests of what a command says or does use
    it: a process costs a second of start-up. What needs a process (signals, `serve`, the
    console script itself) starts one."""
    runner = CliRunner()
    argv = sys.argv
    with runner.isolation(input=stdin, env=env) as (out, err, _):
        sys.argv = ["meterbill", *args]
        try:
            meterbill_main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        else:
            code = 0
        finally:
            sys.argv = argv
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    return subprocess.CompletedProcess(["meterbill", *args], code, stdout, stderr)


@pytest.fixture(scope="session")
def stripe_peer() -> Iterator[StripePeer]:
    """localstripe plus the Checkout, portal and price routes it lacks (tests/stripe_peer.py)."""
    peer = start_stripe_peer()
    yield peer
    peer.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Clock:
    """A clock tests can move; the service reads it instead of the system time."""

    def __init__(self, now: datetime | None = None) -> None:
        self.fixed = now

    def __call__(self) -> datetime:
        return self.fixed or datetime.now(UTC)


class QuickStopServer(uvicorn.Server):
    """uvicorn's server (0.54), stopping in milliseconds instead of ~0.2 s: each test stops
    the services it started, and that wait was most of a test's teardown. It looks at
    `should_exit` every 10 ms (uvicorn: 100 ms), and at shutdown waits for the open
    connections to close rather than a fixed 100 ms; the rest is uvicorn's shutdown."""

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            await asyncio.sleep(0.01)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        for _ in range(20):
            if not self.server_state.connections:
                break
            await asyncio.sleep(0.005)
        await self._wait_tasks_to_complete()
        await self.lifespan.shutdown()


@dataclass
class Service:
    """meterbill served by uvicorn on a real local port."""

    url: str
    settings: Settings
    db: Database
    clock: Clock
    client: httpx.Client
    server: uvicorn.Server
    thread: threading.Thread
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, sub: str | None = "user-1", **claims: Any) -> str:
        body: dict[str, Any] = {"exp": int(time.time()) + 3600, **claims}
        if sub is not None:
            body["sub"] = sub
        return jwt.encode(body, JWT_SECRET, algorithm="HS256")

    def auth(self, sub: str = "user-1", **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub, **claims)}"}

    def post_event(
        self, event: dict[str, Any], secret: str | None = WEBHOOK_SECRET
    ) -> httpx.Response:
        """POST a Stripe event the way Stripe does: raw JSON, signed."""
        import json

        # The SDK's objects hold `unit_amount_decimal` as a Decimal; Stripe sends a string.
        payload = json.dumps(event, default=str).encode()
        headers = {"Content-Type": "application/json"}
        if secret:
            headers["Stripe-Signature"] = sign_payload(payload, secret)
        return self.client.post("/api/v1/billing/webhook", content=payload, headers=headers)

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(10)
        self.db.dispose()


def base_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "jwt_secret": JWT_SECRET,
        "stripe_webhook_secret": WEBHOOK_SECRET,
        "stripe_secret_key": "",
        "stripe_publishable_key": "pk_test_meterbill",
        "stripe_price_premium": "price_premium_test",
        "stripe_price_pro": "price_pro_test",
        "stripe_max_retries": 0,
        "stripe_timeout_seconds": 5.0,
        "log_level": "WARNING",
        **TEST_SELLER,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def make_service(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Start meterbill with these settings on the test's database; stopped after the test."""
    started: list[Service] = []

    def start(clock: Clock | None = None, **overrides: Any) -> Service:
        overrides.setdefault("invoice_dir", tmp_path / "invoices")
        settings = base_settings(database_url, **overrides)
        clock = clock or Clock()
        app = create_app(settings, migrate=False, clock=clock)
        port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
        server = QuickStopServer(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("meterbill did not start")
            time.sleep(0.01)
        url = f"http://127.0.0.1:{port}"
        service = Service(
            url,
            settings,
            Database(database_url),
            clock,
            httpx.Client(base_url=url, timeout=30),
            server,
            thread,
        )
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def service(make_service: Callable[..., Service]) -> Service:
    return make_service()


@pytest.fixture
def stripe_service(
    make_service: Callable[..., Service], stripe_peer: StripePeer
) -> Iterator[Service]:
    """meterbill talking to the Stripe peer, with one premium and one pro price there."""
    stripe_peer.reset()
    premium = stripe_peer_price(stripe_peer, 900)
    pro = stripe_peer_price(stripe_peer, 2900)
    yield make_service(
        stripe_secret_key="sk_test_meterbill",
        stripe_api_base=stripe_peer.url,
        stripe_price_premium=premium,
        stripe_price_pro=pro,
    )
    stripe_peer.clear_failures()


def stripe_peer_price(peer: StripePeer, amount: int) -> str:
    product = httpx.post(
        f"{peer.url}/v1/products", data={"name": f"plan {amount}"}, auth=("sk_test_meterbill", "")
    ).json()
    price = httpx.post(
        f"{peer.url}/v1/prices",
        data={
            "unit_amount": amount,
            "currency": "eur",
            "recurring[interval]": "month",
            "product": product["id"],
        },
        auth=("sk_test_meterbill", ""),
    ).json()
    return str(price["id"])
