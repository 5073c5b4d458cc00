"""`meterbill dev` as a newcomer runs it: one subprocess, then checkout → payment →
invoice → email → quota 429, all over HTTP, with no Stripe account."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import free_port


def _wait(check: Callable[[], object], what: str, timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.3)


def test_dev_walks_checkout_payment_invoice_email_and_quota(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METERBILL_", "STRIPE_"))}
    env.update({"METERBILL_HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"})
    process = subprocess.Popen(
        [sys.executable, "-m", "meterbill", "dev", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        found: dict[str, str] = {}
        deadline = time.monotonic() + 90
        while "ready" not in found:
            assert process.poll() is None, "".join(output)
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert time.monotonic() < deadline, "never ready:\n" + "".join(output)
                continue
            for label in ("token", "api key"):
                if line.startswith(f"{label}: "):
                    found[label] = line.split(": ", 1)[1].strip()
            if line.startswith("Ctrl-C stops everything"):
                found["ready"] = "yes"
        assert "Traceback" not in "".join(output)
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {found['token']}"}
        client = httpx.Client(base_url=base, timeout=30)

        checkout = client.post("/api/v1/billing/checkout", json={"plan": "premium"}, headers=auth)
        assert checkout.status_code == 200, checkout.text
        session_id = checkout.json()["session_id"]
        assert client.get(f"/dev/checkout/{session_id}").status_code == 200
        paid = client.post(f"/dev/checkout/{session_id}/pay")
        assert paid.status_code == 200, paid.text

        _wait(
            lambda: client.get("/api/v1/billing/status", headers=auth).json()["plan"] == "premium",
            "the plan becomes premium",
        )
        items = _wait(
            lambda: client.get("/api/v1/billing/invoices", headers=auth).json()["items"],
            "an invoice is issued",
        )
        (invoice,) = items  # type: ignore[misc]
        assert invoice["amount_ttc"] == 900 and invoice["number"].startswith("FACT-")
        _wait(lambda: "--- email #1 to dev-user@example.com" in "".join(output), "an email")
        assert invoice["number"] in "".join(output)

        key = {"X-API-Key": found["api key"]}
        consume = {"user_id": "someone-free", "metric": "api_calls", "value": 25}
        refused = client.post("/api/v1/usage/consume", json=consume, headers=key)
        assert refused.status_code == 429 and "Retry-After" in refused.headers
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert "meterbill dev stopped" in "".join(output)
    assert "Traceback" not in "".join(output)
