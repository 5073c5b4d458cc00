"""Request bodies are capped per route: 413 (JSON, stable code) without reading past the cap,
and the server's memory stays bounded whatever a client sends."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from meterbill.auth.service import create_api_key
from meterbill.db import Database
from meterbill.migrate import upgrade
from tests.conftest import Service, free_port

MIB = 1024 * 1024
HUGE = 64 * MIB
USAGE_EVENTS_BODY = 16 * MIB  # the documented caps (README, meterbill.request_limits)
STRIPE_WEBHOOK_BODY = 1 * MIB


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, object]]:
    data = b""
    sock.settimeout(30)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            None,
        )
        if length is not None and len(body) >= length:
            break
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _post_raw(
    port: int, path: str, size: int, *, chunked: bool, language: str = "fr", key: str = ""
) -> tuple[int, dict[str, object], int]:
    """POST `size` bytes of body over a raw socket, stopping as soon as the server answers.
    Returns (status, JSON body, bytes of body sent before the answer)."""
    sock = socket.create_connection(("127.0.0.1", port))
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Accept-Language: {language}\r\nStripe-Signature: t=1,v1=00\r\n"
        f"Authorization: Bearer {key}\r\n{framing}\r\n\r\n".encode()
    )
    piece = b"[" * (256 * 1024)
    sent = 0
    try:
        while sent < size:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            chunk = piece[: size - sent]
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            sent += len(chunk)
        else:
            if chunked:
                sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        status, body = _read_answer(sock)
    finally:
        sock.close()
    return status, body, sent


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, int, str]]:
    """`meterbill serve` in a process of its own (one uvicorn worker, in that process),
    and an API key."""
    port = free_port()
    url = f"sqlite:///{tmp_path}/limits.db"
    db = Database(url)
    upgrade(db.engine)
    with db.transaction() as session:
        key = create_api_key(session, "limits")
    db.dispose()
    env = {
        **os.environ,
        "METERBILL_DATABASE_URL": url,
        "METERBILL_JWT_SECRET": "x" * 32,
        "STRIPE_WEBHOOK_SECRET": "whsec_limits",
        "METERBILL_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "meterbill", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "meterbill serve stopped"
            try:
                httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "meterbill serve never answered"
                time.sleep(0.2)
        yield process.pid, port, key
    finally:
        process.terminate()
        process.wait(10)


def test_huge_bodies_get_413_and_the_server_memory_stays_bounded(
    served: tuple[int, int, str],
) -> None:
    pid, port, key = served
    # Warm up the paths once so that imports and first-request allocations are done.
    for path in ("/api/v1/billing/webhook", "/api/v1/usage/events"):
        httpx.post(f"http://127.0.0.1:{port}{path}", content=b"{}", timeout=10)
    rss_before = _status_kib(pid, "VmRSS")
    peak_before = _status_kib(pid, "VmHWM")

    answers = {}
    for path in ("/api/v1/billing/webhook", "/api/v1/usage/events"):
        for chunked in (False, True):
            answers[path, chunked] = _post_raw(port, path, HUGE, chunked=chunked, key=key)

    time.sleep(0.5)
    rss_after = _status_kib(pid, "VmRSS")
    peak_after = _status_kib(pid, "VmHWM")
    print(
        f"\nRSS before {rss_before} KiB, after {rss_after} KiB; "
        f"peak before {peak_before} KiB, peak after {peak_after} KiB "
        f"(four 64 MiB bodies sent)"
    )
    # The largest cap is 16 MiB: the process may hold about that much once, never the
    # bodies themselves (the seed's server grew past 1.7 GB on one 64 MiB webhook).
    assert (peak_after - rss_before) * 1024 < USAGE_EVENTS_BODY * 3, (rss_before, peak_after)
    assert (rss_after - rss_before) * 1024 < USAGE_EVENTS_BODY * 2, (rss_before, rss_after)
    for (path, chunked), (status, body, sent) in answers.items():
        assert status == 413, (path, chunked, status, body)
        assert body["code"] == "payload_too_large"
        cap = USAGE_EVENTS_BODY if path.endswith("/events") else STRIPE_WEBHOOK_BODY
        assert body["details"] == {"max_bytes": cap}
        # The server answered long before the client could send the 64 MiB.
        assert sent < cap + 8 * MIB, (path, chunked, sent)
    # And the process still serves.
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200


def test_the_refusal_is_json_in_the_callers_language(service: Service) -> None:
    too_big = b"x" * (64 * 1024 + 1)
    french = service.client.post("/api/v1/usage/consume", content=too_big)
    english = service.client.post(
        "/api/v1/billing/checkout", content=too_big, headers={"Accept-Language": "en"}
    )
    assert french.status_code == english.status_code == 413
    assert french.json()["code"] == english.json()["code"] == "payload_too_large"
    assert french.json()["error"].startswith("Requête trop volumineuse")
    assert english.json()["error"].startswith("Request body too large")
    assert english.json()["details"] == {"max_bytes": 64 * 1024}


def test_a_streamed_body_over_the_cap_is_cut_at_the_cap(service: Service) -> None:
    port = int(service.url.rsplit(":", 1)[1])
    status, body, sent = _post_raw(
        port, "/api/v1/billing/webhook", 8 * MIB, chunked=True, language="en"
    )
    assert status == 413 and body["code"] == "payload_too_large"
    assert sent < 8 * MIB


def test_caps_are_configurable_per_route(make_service: object) -> None:
    service = make_service(  # type: ignore[operator]
        max_body_bytes=1000, body_limits={"/api/v1/billing/webhook": 100}
    )
    answer = service.client.post("/api/v1/billing/webhook", content=b"{" * 101)
    assert answer.status_code == 413
    assert answer.json()["details"] == {"max_bytes": 100}
    small = service.client.post("/api/v1/usage/consume", content=b"{" * 999)
    assert small.status_code != 413
    assert service.client.post("/api/v1/usage/consume", content=b"{" * 1001).status_code == 413


def test_a_full_batch_of_the_longest_events_fits_its_cap(service: Service) -> None:
    """10,000 events with every field at its longest are accepted (12.2 MB of JSON)."""
    with service.db.transaction() as session:
        key = create_api_key(session, "limits")
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    events = [
        {
            "id": f"{n:08d}".ljust(255, "i"),
            "user_id": "u" * 255,
            "metric": "api_calls",
            "value": 2**40,
            "timestamp": now,
            "endpoint": "/" + "e" * 511,
        }
        for n in range(10_000)
    ]
    payload = json.dumps({"events": events}).encode()
    assert len(payload) > 11 * MIB
    answer = service.client.post(
        "/api/v1/usage/events",
        content=payload,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=120,
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["new"] == 10_000
