"""The README's way to run meterbill: `meterbill serve` migrates and serves."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from meterbill.db import Database
from meterbill.migrate import current_revision
from tests.conftest import free_port, run_meterbill


def test_serve_migrates_then_answers_health_checks(tmp_path: object) -> None:
    database_url = f"sqlite:///{tmp_path}/fresh.db"
    port = free_port()
    env = {**os.environ, "METERBILL_DATABASE_URL": database_url, "METERBILL_JWT_SECRET": "x" * 32}
    process = subprocess.Popen(
        [sys.executable, "-m", "meterbill", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "meterbill serve never answered"
                time.sleep(0.2)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
        db = Database(database_url)
        assert current_revision(db.engine) is not None
        db.dispose()
    finally:
        process.terminate()
        process.wait(10)


def test_migrate_is_idempotent(database_url: str) -> None:
    for _ in range(2):
        result = run_meterbill("migrate", env={"METERBILL_DATABASE_URL": database_url})
        assert result.returncode == 0, result.stderr
        assert "database at revision" in result.stdout


def test_a_database_left_in_the_current_directory_is_named_not_silently_ignored(
    tmp_path: Path,
) -> None:
    # Before METERBILL_HOME, meterbill kept ./meterbill.db; a user upgrading must be told.
    (tmp_path / "meterbill.db").write_bytes(b"")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("METERBILL_") and key != "XDG_DATA_HOME"
    }
    env["HOME"] = str(tmp_path / "home")

    def plans() -> str:
        command = [sys.executable, "-m", "meterbill", "plans"]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
        return done.stderr

    stray = plans()
    assert f"{tmp_path / 'meterbill.db'} is not used" in stray
    assert "METERBILL_HOME=." in stray
    env["METERBILL_HOME"] = "."
    used = plans()
    assert "is not used" not in used and str(tmp_path) in used
