"""What every benchmark needs: a fresh database, meterbill served by uvicorn in a
subprocess (several workers), an API key, and percentiles."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.client import HTTPConnection
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from meterbill.auth.service import create_api_key
from meterbill.db import Database
from meterbill.migrate import upgrade

PG_ADMIN = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
WORKDIR = Path(os.environ.get("BENCH_DIR", "/tmp/meterbill-bench"))
JWT_SECRET = "bench-jwt-secret-that-is-long-enough-for-hs256"


def banner(name: str, backend: str) -> None:
    print(f"== {name} on {backend}; os.cpu_count() = {os.cpu_count()}", flush=True)


def fresh_database(backend: str, name: str = "meterbill_bench") -> str:
    """An empty, migrated database; its URL."""
    if backend == "sqlite":
        WORKDIR.mkdir(parents=True, exist_ok=True)
        path = WORKDIR / f"{name}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    else:
        admin = create_engine(
            PG_ADMIN.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    db = Database(url)
    upgrade(db.engine)
    db.dispose()
    return url


def api_key(url: str) -> str:
    db = Database(url)
    with db.transaction() as session:
        key = create_api_key(session, "bench")
    db.dispose()
    return key


def keep_alive(base: str, timeout: float = 120) -> HTTPConnection:
    """A keep-alive connection to `base` (``http://host:port``) with the standard library's
    client. The benchmarks' clients share the server's two cores: httpx costs ~0.84 ms of
    CPU per request on this machine, `http.client` ~0.17 ms (bench.webhooks' floor: 690
    against 1,431 events/s with the same bodies)."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    return HTTPConnection(host, int(port), timeout=timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(base: str, process: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"{name} did not start")
        time.sleep(0.2)


@contextmanager
def floor(url: str, workers: int = 2, port: int | None = None, **env: str) -> Iterator[str]:
    """The floor app (bench/floor.py) serving `url`'s floor tables; yields its base URL."""
    port = port or free_port()
    command = [sys.executable, "-m", "bench.floor", "--port", str(port), "--workers", str(workers)]
    environment = {**os.environ, "FLOOR_DATABASE_URL": url, **env}
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process, "the floor app")
        yield base
    finally:
        process.terminate()
        process.wait(30)


@contextmanager
def meterbill(url: str, workers: int = 2, port: int | None = None, **env: str) -> Iterator[str]:
    """meterbill serving `url` with uvicorn in a subprocess (on a free port unless told);
    yields its base URL."""
    port = port or free_port()
    command = [shutil.which("meterbill") or "meterbill", "serve", "--port", str(port)]
    command += ["--workers", str(workers)]
    environment = {
        **os.environ,
        "METERBILL_DATABASE_URL": url,
        "METERBILL_JWT_SECRET": JWT_SECRET,
        "METERBILL_LOG_LEVEL": "WARNING",
        **env,
    }
    if not Path(command[0]).exists():
        command = [sys.executable, "-m", "meterbill", *command[1:]]
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process, "meterbill")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(60)  # background work (PDFs) may still be finishing
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_threads(target: Callable[[], object], count: int) -> float:
    """Seconds for `count` threads running `target` to all finish."""
    threads = [threading.Thread(target=target) for _ in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started
