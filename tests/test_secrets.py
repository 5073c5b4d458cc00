"""No secret is ever printed: the service and every CLI command (found by walking the
Typer app, so a new command is covered without editing this file) run with every secret
set, working and failing, and none of the secret values appears in any output or log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import typer.main
from sqlalchemy import create_engine, text

from meterbill.cli import app
from tests.conftest import POSTGRES_URL, _pg_url, free_port
from tests.jobs.conftest import SmtpServer
from tests.stripe_peer import StripePeer, sign_payload

# Values for arguments a command requires (the others get a placeholder of their type).
ARGUMENTS: dict[tuple[str, ...], list[str]] = {
    ("apikey", "create"): ["ci-key"],
    ("apikey", "revoke"): ["nosuchprefix"],
    ("jobs", "retry"): ["1"],
    ("invoices", "export"): ["--month", "2026-11", "--output", "-"],
    ("invoices", "ereporting"): ["--month", "2026-11", "--output", "-"],
    ("accounting", "fec"): ["--year", "2026", "--output-dir", "{tmp}"],
    ("worker",): ["--burst"],
    ("demo",): ["--users", "5"],
    ("usage", "retention"): ["--keep-months", "12"],
    ("admin", "create"): ["ops@example.com", "--password-stdin"],
    ("token",): ["user-1"],
    ("dev",): ["--port", str(free_port())],
}
# Commands that serve until stopped: they run a few seconds, then get SIGTERM.
LONG_RUNNING = {("worker", "forever"), ("dev",)}
EXTRA_RUNS: dict[tuple[str, ...], tuple[tuple[str, ...], list[str]]] = {
    ("worker", "forever"): (("worker",), ["--no-schedules"]),
}


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer(free_port())
    server.start()
    yield server
    server.stop()


def _secret(name: str) -> str:
    return f"{name}{uuid.uuid4().hex}"


@pytest.fixture
def secrets() -> dict[str, str]:
    return {
        "db_password": _secret("dbpw"),
        "stripe_key": _secret("sk_test_"),
        "stripe_webhook": _secret("whsec_"),
        "webhook_secret": _secret("mbwh"),
        "smtp_password": _secret("smtppw"),
        "jwt_secret": _secret("jwt"),
    }


def _commands() -> list[tuple[tuple[str, ...], Any]]:
    """Every leaf command of the CLI (Typer's own click: walked by its attributes)."""
    found: list[tuple[tuple[str, ...], Any]] = []

    def walk(command: Any, path: tuple[str, ...]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, (*path, name))
        else:
            found.append((path, command))

    walk(typer.main.get_command(app), ())
    return found


def _placeholder(param: Any) -> str:
    kind = getattr(param, "type", None)  # Typer's own options may not carry one
    choices = getattr(kind, "choices", None)
    if choices:
        return str(choices[0])
    if getattr(kind, "name", "") in ("integer", "float"):
        return "1"
    return "x"


def _arguments(path: tuple[str, ...], command: Any) -> list[str]:
    if path in ARGUMENTS:
        return list(ARGUMENTS[path])
    args: list[str] = []
    for param in command.params:
        if not param.required:
            continue
        if param.param_type_name == "option":
            args += [param.opts[0], _placeholder(param)]
        else:
            args.append(_placeholder(param))
    return args


def _run(
    path: tuple[str, ...], args: list[str], env: dict[str, str], seconds: float
) -> tuple[str, Iterator[None] | None]:
    process = subprocess.Popen(
        [sys.executable, "-m", "meterbill", *path, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    return output, None


def _serve_and_call(env: dict[str, str], secrets: dict[str, str]) -> str:
    """`meterbill serve`, answering good and bad requests; its whole output."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "meterbill", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            try:
                httpx.get(f"{base}/readyz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        if process.poll() is None:
            _call(base, secrets)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    return output


def _call(base: str, secrets: dict[str, str]) -> None:
    token = jwt.encode(
        {"sub": "u1", "exp": int(time.time()) + 60, "email": "u1@example.com"},
        secrets["jwt_secret"],
        algorithm="HS256",
    )
    auth = {"Authorization": f"Bearer {token}"}
    payload = b'{"id": "evt_1", "type": "ping", "data": {"object": {}}}'
    signed = sign_payload(payload, secrets["stripe_webhook"])
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            client.get("/readyz")
            client.get("/api/v1/billing/status", headers=auth)
            client.get("/api/v1/billing/status", headers={"Authorization": "Bearer bad"})
            client.post("/api/v1/billing/checkout", json={"plan": "premium"}, headers=auth)
            client.post("/api/v1/billing/portal", headers=auth)
            client.post(
                "/api/v1/billing/webhook", content=payload, headers={"Stripe-Signature": signed}
            )
            client.post(
                "/api/v1/billing/webhook", content=payload, headers={"Stripe-Signature": "x"}
            )
            client.get("/api/v1/billing/consumption", headers=auth)
    except httpx.TransportError:
        pass  # a service that cannot start: its output is what is checked


def _environment(
    database_url: str, secrets: dict[str, str], stripe: str, smtp: str
) -> dict[str, str]:
    return {
        **os.environ,
        "METERBILL_DATABASE_URL": database_url,
        "STRIPE_SECRET_KEY": secrets["stripe_key"],
        "STRIPE_API_BASE": stripe,
        "STRIPE_WEBHOOK_SECRET": secrets["stripe_webhook"],
        "STRIPE_PRICE_PREMIUM": "price_premium_test",
        "METERBILL_STRIPE_MAX_RETRIES": "0",
        "METERBILL_STRIPE_TIMEOUT": "3",
        "METERBILL_WEBHOOK_SECRET": secrets["webhook_secret"],
        "METERBILL_WEBHOOK_URLS": "http://127.0.0.1:9/hooks",
        "METERBILL_SMTP_URL": f"smtp://billing:{secrets['smtp_password']}@{smtp}",
        "METERBILL_JWT_SECRET": secrets["jwt_secret"],
        "METERBILL_LOG_LEVEL": "DEBUG",
        "METERBILL_WORKER_POLL_SECONDS": "0.2",
        "COLUMNS": "200",
    }


def _every_output(env: dict[str, str], secrets: dict[str, str], tmp: Path) -> dict[str, str]:
    outputs: dict[str, str] = {}
    commands = dict(_commands())
    # `serve` runs once, below, answering requests: a run without them showed nothing more.
    runs = [(path, path, _arguments(path, command)) for path, command in commands.items()]
    runs = [run for run in runs if run[0] != ("serve",)]
    runs += [(name, path, args) for name, (path, args) in EXTRA_RUNS.items()]

    def run(name: tuple[str, ...], path: tuple[str, ...], args: list[str]) -> None:
        seconds = 4.0 if name in LONG_RUNNING else 120.0
        started = time.monotonic()
        args = [arg.replace("{tmp}", str(tmp)) for arg in args]  # the test's own folder
        output, _ = _run(path, args, {**env, "TMPDIR": str(tmp)}, seconds)
        outputs[" ".join(name)] = output
        print(f"{' '.join(name)}: {time.monotonic() - started:.1f} s")

    # Side by side: each command is a process that mostly waits (start-up, the database);
    # those that wait their few seconds to be stopped go first, beside the quick ones.
    runs.sort(key=lambda spec: spec[0] not in LONG_RUNNING)
    with ThreadPoolExecutor(3) as pool:
        for future in [pool.submit(run, *spec) for spec in runs]:
            future.result()
    # After the others: the requests make a user, and `demo` loads only into an empty database.
    outputs["serve"] = _serve_and_call(env, secrets)
    return outputs


def _leaks(outputs: dict[str, str], secrets: dict[str, str]) -> list[tuple[str, str]]:
    return [
        (command, kind)
        for command, output in outputs.items()
        for kind, value in secrets.items()
        if value in output
    ]


@pytest.fixture(params=["sqlite", *(["postgresql"] if POSTGRES_URL else [])])
def protected_database(
    request: pytest.FixtureRequest, tmp_path: Path, secrets: dict[str, str]
) -> Iterator[str]:
    """A fresh database; on PostgreSQL, reached as a role with a password."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/secrets.db"
        return
    role = name = f"mb_secrets_{uuid.uuid4().hex[:8]}"
    admin = create_engine(_pg_url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{secrets['db_password']}'"))
        conn.execute(text(f'CREATE DATABASE "{name}" OWNER {role}'))
    host = POSTGRES_URL.split("@", 1)[1].rsplit("/", 1)[0]
    yield f"postgresql://{role}:{secrets['db_password']}@{host}/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
    admin.dispose()


def test_no_secret_in_any_output_of_the_service_and_every_command(
    protected_database: str,
    secrets: dict[str, str],
    stripe_peer: StripePeer,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    env = _environment(protected_database, secrets, stripe_peer.url, f"127.0.0.1:{smtp.port}")
    outputs = _every_output(env, secrets, tmp_path)
    assert {"serve", "migrate", "worker", "worker forever", "demo", "apikey create"} <= set(outputs)
    assert "ran " in outputs["worker"] and "users: 5" in outputs["demo"]  # they worked
    assert _leaks(outputs, secrets) == []


def test_no_secret_in_any_output_when_everything_is_unreachable(
    secrets: dict[str, str], tmp_path: Path
) -> None:
    closed = free_port()
    database = f"postgresql://meterbill:{secrets['db_password']}@127.0.0.1:{closed}/meterbill"
    env = _environment(database, secrets, f"http://127.0.0.1:{closed}", f"127.0.0.1:{closed}")
    outputs = _every_output(env, secrets, tmp_path)
    assert _leaks(outputs, secrets) == []
