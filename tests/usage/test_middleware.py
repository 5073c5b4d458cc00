"""The metering middlewares inside real host apps (Flask under werkzeug, FastAPI under
uvicorn) talking to a running meterbill, including while meterbill is down."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from flask import Flask
from sqlalchemy import select
from werkzeug.serving import make_server

import tests.conftest
from meterbill.client import MeterbillASGI, MeterbillWSGI, header_identity
from meterbill.db import Database
from meterbill.usage.models import ConsumptionEvent
from tests.conftest import Service, free_port
from tests.usage.conftest import Metering, api_key_for

FAST = {"cache_seconds": 0, "flush_interval": 0.05, "max_backoff": 0.2}


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@contextmanager
def served_wsgi(app: Any) -> Iterator[httpx.Client]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.server_port}") as client:
            yield client
    finally:
        server.shutdown()
        thread.join(5)


@contextmanager
def served_asgi(app: Any) -> Iterator[httpx.Client]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(15)


def flask_host(calls: list[str]) -> Flask:
    app = Flask("host")

    @app.get("/hello")
    def hello() -> dict[str, bool]:
        calls.append("hello")
        return {"hello": True}

    return app


def endpoints_of(db: Database, user_id: str) -> list[str | None]:
    with db.reading() as session:
        return list(
            session.scalars(
                select(ConsumptionEvent.endpoint).where(ConsumptionEvent.user_id == user_id)
            )
        )


def test_flask_app_is_metered_warned_and_blocked(make_metering: Callable[..., Metering]) -> None:
    metering = make_metering(limit_free_api_calls=5)
    calls: list[str] = []
    app = flask_host(calls)
    middleware = MeterbillWSGI(
        app.wsgi_app,
        metering.service.url,
        metering.key,
        identify=header_identity("X-User"),
        **FAST,
    )
    app.wsgi_app = middleware  # type: ignore[method-assign]
    user = {"X-User": "flo"}
    with served_wsgi(app) as client:
        assert client.get("/hello").status_code == 200  # no user: not metered
        for expected in (1, 2, 3, 4):
            answer = client.get("/hello", headers=user)
            assert answer.status_code == 200 and "X-Billing-Alert" not in answer.headers
            wait_until(lambda n=expected: metering.daily_total("flo") == n)  # sent in background
        warned = client.get("/hello", headers=user)  # meterbill has 4 of 5: 80 %
        assert warned.status_code == 200
        assert warned.headers["X-Billing-Alert"] == "soft_limit_warning"
        wait_until(lambda: metering.daily_total("flo") == 5)
        blocked = client.get("/hello", headers=user)
        assert blocked.status_code == 429
        assert blocked.headers["X-Billing-Alert"] == "hard_limit_reached"
        assert blocked.json()["code"] == "hard_limit_reached"
    middleware.close()
    assert len(calls) == 1 + 5
    assert metering.daily_total("flo") == 5
    assert endpoints_of(metering.service.db, "flo") == ["/hello"] * 5


def test_events_wait_while_meterbill_is_down_then_arrive(
    make_service: Callable[..., Service], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The address meterbill will have: bound but not listening, so connections are refused
    # (meterbill is down) and no other process can take the port meanwhile.
    reserved = socket.socket()
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reserved.bind(("127.0.0.1", 0))
    port = reserved.getsockname()[1]
    db = Database(database_url)
    key = api_key_for(db)
    app = flask_host([])
    middleware = MeterbillWSGI(
        app.wsgi_app, f"http://127.0.0.1:{port}", key, identify=header_identity("X-User"), **FAST
    )
    app.wsgi_app = middleware  # type: ignore[method-assign]
    with served_wsgi(app) as client:
        answers = [client.get("/hello", headers={"X-User": "gus"}) for _ in range(4)]
    assert [a.status_code for a in answers] == [200] * 4  # fail open
    time.sleep(0.3)  # the sender has tried and failed by now
    assert middleware.guard.buffer.pending == 4
    assert endpoints_of(db, "gus") == []

    reserved.close()
    monkeypatch.setattr(tests.conftest, "free_port", lambda: port)
    make_service()  # meterbill comes up on the address the middleware knows
    wait_until(lambda: len(endpoints_of(db, "gus")) == 4, timeout=20)
    # The sender drops the batch from its buffer once meterbill's answer is back.
    wait_until(lambda: middleware.guard.buffer.pending == 0, timeout=5)
    middleware.close()
    assert len(endpoints_of(db, "gus")) == 4
    db.dispose()


def fastapi_host(metering: Metering, calls: list[str], **options: Any) -> FastAPI:
    host = FastAPI()

    @host.get("/work")
    def work() -> dict[str, bool]:
        calls.append("work")
        return {"ok": True}

    host.add_middleware(
        MeterbillASGI,  # type: ignore[arg-type]
        base_url=metering.service.url,
        api_key=metering.key,
        identify=header_identity("X-User"),
        **options,
    )
    return host


def test_fastapi_app_is_metered_blocked_and_flushed_at_shutdown(
    make_metering: Callable[..., Metering],
) -> None:
    metering = make_metering(limit_free_api_calls=3)
    calls: list[str] = []
    # One check, then requests are counted locally; nothing is sent before shutdown.
    host = fastapi_host(metering, calls, cache_seconds=60, flush_interval=3600)
    user = {"X-User": "hana"}
    with served_asgi(host) as client:
        codes = [client.get("/work", headers=user).status_code for _ in range(4)]
        assert client.get("/work").status_code == 200  # no user: not metered
        assert metering.daily_total("hana") == 0
    assert codes == [200, 200, 200, 429]
    assert len(calls) == 4
    assert metering.daily_total("hana") == 3  # sent when the host shut down

    with served_asgi(fastapi_host(metering, calls, cache_seconds=60)) as client:
        answer = client.get("/work", headers=user)  # a new host asks meterbill: at the limit
    assert answer.status_code == 429
    assert answer.headers["x-billing-alert"] == "hard_limit_reached"
    assert len(calls) == 4
    assert metering.daily_total("hana") == 3
