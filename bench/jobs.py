"""How many jobs per second `meterbill worker` processes get through, beside what raw SQL
on the same database does with the same number of no-op jobs.

    .venv/bin/python -m bench.jobs --jobs 10000 --workers 2

Creates a fresh `meterbill_bench_jobs` database on the PostgreSQL of `BENCH_POSTGRES_URL`
(or `--backend sqlite`). Each job is a `webhook.event` with no webhook URL configured, so
what is measured is the queue itself: claim (with its lease), run, finish.

- floor, batched: one connection claims 100 due jobs at a time (`UPDATE … WHERE id IN
  (SELECT … FOR UPDATE SKIP LOCKED LIMIT 100) RETURNING`), marks them done in one
  `UPDATE`, commits; no Python beyond the loop.
- floor, one by one: the same with `LIMIT 1` and a commit per claim and per finish (what
  a queue that takes one job per transaction can do at best), on `--single-jobs` jobs.
- meterbill: `--workers` `meterbill worker --no-schedules` processes, already started and
  idle, then the jobs are committed in one transaction; timed until every job is done.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable

from sqlalchemy import Connection, create_engine, text

from bench.common import banner, fresh_database

PAYLOAD = '{"id":"evt_bench","type":"bench","created":0,"data":{}}'


def _enqueue(conn: Connection, count: int) -> None:
    conn.execute(text("DELETE FROM jobs"))
    if conn.dialect.name == "postgresql":
        conn.execute(
            text(
                "INSERT INTO jobs (kind, payload, status, attempts, max_attempts, run_at, "
                "created_at) SELECT 'webhook.event', :p, 'queued', 0, 10, now(), now() "
                "FROM generate_series(1, :n)"
            ),
            {"p": PAYLOAD, "n": count},
        )
    else:
        conn.execute(
            text(
                "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < :n) "
                "INSERT INTO jobs (kind, payload, status, attempts, max_attempts, run_at, "
                "created_at) SELECT 'webhook.event', :p, 'queued', 0, 10, "
                "strftime('%Y-%m-%d %H:%M:%f', 'now'), strftime('%Y-%m-%d %H:%M:%f', 'now') "
                "FROM s"
            ),
            {"p": PAYLOAD, "n": count},
        )


def _floor(url: str, count: int, batch: int) -> float:
    """Seconds for one raw SQL loop to claim and finish `count` no-op jobs."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        _enqueue(conn, count)
    sqlite = engine.dialect.name == "sqlite"
    lock = "" if sqlite else " FOR UPDATE SKIP LOCKED"
    now = "strftime('%Y-%m-%d %H:%M:%f', 'now')" if sqlite else "now()"
    claim = text(
        f"UPDATE jobs SET status = 'running', attempts = attempts + 1, locked_by = 'floor#1', "  # noqa: S608
        f"locked_until = {now} WHERE id IN (SELECT id FROM jobs WHERE status = 'queued' "
        f"ORDER BY run_at, id LIMIT {batch}{lock}) RETURNING id, payload"
    )
    chosen = "IN (SELECT value FROM json_each(:ids))" if sqlite else "= ANY(CAST(:ids AS bigint[]))"
    finish = text(
        f"UPDATE jobs SET status = 'done', finished_at = {now}, locked_until = NULL "  # noqa: S608
        f"WHERE id {chosen}"
    )
    done = 0
    started = time.perf_counter()
    with engine.connect() as conn:
        while done < count:
            with conn.begin():
                ids = [row.id for row in conn.execute(claim)]
            if not ids:
                break
            with conn.begin():
                conn.execute(finish, {"ids": str(ids) if sqlite else ids})
            done += len(ids)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def _meterbill(url: str, count: int, workers: int) -> tuple[float, int]:
    """Seconds for `workers` worker processes to run `count` jobs; jobs run twice."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM jobs"))
    env = {
        **os.environ,
        "METERBILL_DATABASE_URL": url,
        "METERBILL_WEBHOOK_URLS": "",
        "METERBILL_WORKER_POLL_SECONDS": "0.05",
        "METERBILL_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "meterbill", "-q", "worker", "--no-schedules"]
    processes = [
        subprocess.Popen([*command, "--id", f"w{i}"], env=env, stderr=subprocess.PIPE, text=True)
        for i in range(workers)
    ]
    try:
        for process in processes:  # each says so once it polls the queue
            assert process.stderr is not None
            line = process.stderr.readline()
            if "meterbill worker" not in line:
                raise RuntimeError(f"worker did not start: {line}")
        time.sleep(0.5)
        with engine.begin() as conn:
            _enqueue(conn, count)
        started = time.perf_counter()
        left = _poll(engine, "SELECT count(*) FROM jobs WHERE status <> 'done'")
        while left():
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)
    with engine.connect() as conn:
        twice = conn.execute(text("SELECT count(*) FROM jobs WHERE attempts <> 1")).scalar_one()
    engine.dispose()
    return elapsed, int(twice)


def _poll(engine: object, query: str) -> Callable[[], int]:
    def left() -> int:
        with engine.connect() as conn:  # type: ignore[attr-defined]
            return int(conn.execute(text(query)).scalar_one())

    return left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--single-jobs", type=int, default=1_000, help="Jobs for the one-by-one floor (slow)."
    )
    args = parser.parse_args()
    banner("job queue", args.backend)
    print(
        "command:",
        shlex.join([os.path.basename(sys.executable), "-m", "bench.jobs", *sys.argv[1:]]),
    )
    url = fresh_database(args.backend, "meterbill_bench_jobs")

    batched = _floor(url, args.jobs, 100)
    single = args.single_jobs / _floor(url, args.single_jobs, 1) if args.single_jobs else 0.0
    elapsed, twice = _meterbill(url, args.jobs, args.workers)
    rate = args.jobs / elapsed
    print(f"{args.jobs} no-op jobs")
    print(f"floor, batched (1 SQL loop, 100 a claim):  {args.jobs / batched:9,.0f} jobs/s")
    print(
        f"floor, one by one (1 SQL loop):            {single:9,.0f} jobs/s "
        f"({args.single_jobs} jobs)"
    )
    print(
        f"meterbill, {args.workers} worker(s):                  {rate:9,.0f} jobs/s  "
        f"= {rate * batched / args.jobs:.0%} of the batched floor, "
        f"{rate / single if single else 0:.1f}x the one-by-one floor; "
        f"jobs run more than once: {twice}"
    )


if __name__ == "__main__":
    main()
