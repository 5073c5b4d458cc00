"""How many jobs per second `meterbill worker` processes get through.

    python -m bench.jobs_throughput --database-url postgresql://postgres@127.0.0.1/bench \
        --jobs 2000 --workers 2

Uses a scratch database that it empties of jobs first. Each job is a `webhook.event` with
no webhook URL configured, so what is measured is the queue itself: claim (with its lease),
run, finish — three transactions a job.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from sqlalchemy import delete, func, select

from meterbill.db import Database
from meterbill.jobs.models import Job
from meterbill.jobs.queue import enqueue
from meterbill.migrate import upgrade


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    db = Database(args.database_url)
    upgrade(db.engine)
    with db.transaction() as session:
        session.execute(delete(Job))
        for n in range(args.jobs):
            enqueue(session, "webhook.event", {"id": f"evt_{n}", "type": "bench", "data": {}})
    env = {
        **os.environ,
        "METERBILL_DATABASE_URL": args.database_url,
        "METERBILL_WEBHOOK_URLS": "",
        "METERBILL_WORKER_POLL_SECONDS": "0.05",
        "METERBILL_LOG_LEVEL": "WARNING",
    }
    started = time.monotonic()
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "meterbill", "worker", "--no-schedules", "--id", f"w{i}"],
            env=env,
        )
        for i in range(args.workers)
    ]
    try:
        while True:
            with db.reading() as session:
                left = session.scalar(select(func.count()).where(Job.status != "done"))
            if not left:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - started
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(10)
    with db.reading() as session:
        twice = session.scalar(select(func.count()).where(Job.attempts != 1))
    print(
        f"{args.jobs} jobs, {args.workers} worker(s), {db.engine.dialect.name}: "
        f"{elapsed:.1f} s, {args.jobs / elapsed:.0f} jobs/s (incl. worker start-up); "
        f"jobs run more than once: {twice}"
    )
    db.dispose()


if __name__ == "__main__":
    main()
