"""Operator commands for background work: worker, jobs, reconcile, demo.

What a command needs (rich, the services) is imported inside it: every `meterbill` start
imports this module."""

from __future__ import annotations

import signal
import threading
from enum import StrEnum
from typing import Annotated, Any

import typer

from meterbill.config import Settings
from meterbill.db import Database, url_for_display, utcnow


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


jobs_app = typer.Typer(
    help="The job queue: look at jobs and retry parked ones.", no_args_is_help=True
)


def _database(settings: Settings) -> Database:
    from meterbill.migrate import upgrade

    db = Database(settings.database_url)
    upgrade(db.engine)
    return db


def worker(
    burst: Annotated[
        bool, typer.Option(help="Run what is due now (schedules included), then exit.")
    ] = False,
    schedules: Annotated[
        bool, typer.Option(help="Also run the schedules (grace expiry, reconcile, prune).")
    ] = True,
    worker_id: Annotated[str | None, typer.Option("--id", help="Name in job locks.")] = None,
) -> None:
    """Run queued jobs (emails, webhooks) and the schedules until stopped (SIGTERM/Ctrl-C)."""
    from meterbill.invoicing.renderer import stop_renderer
    from meterbill.jobs.worker import SCHEDULES, Worker
    from meterbill.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_level)
    db = _database(settings)
    runner = Worker(settings, db, worker_id=worker_id, schedules=SCHEDULES if schedules else ())
    try:
        if burst:
            if schedules:
                runner.tick_schedules()
            count = _run_burst(runner, db)
            typer.echo(f"ran {count} job(s)")
            return
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        database = url_for_display(settings.database_url)
        typer.echo(f"meterbill worker {runner.id} on {database}", err=True)
        runner.run_forever(stop)
    finally:
        stop_renderer()  # the PDF render child, if a job made one: no orphan left
        db.dispose()


def _run_burst(runner: Any, db: Database) -> int:
    """Run the due jobs one by one under a progress bar; how many ran."""
    from rich.console import Console
    from rich.progress import Progress
    from sqlalchemy import func, select

    from meterbill.jobs.models import Job

    with db.reading() as session:
        due = session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.status == "queued", Job.run_at <= utcnow())
        )
    count = 0
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("running jobs", total=max(int(due or 0), 1))
        while ran := runner.run_batch():
            count += ran
            progress.update(task, completed=count, total=max(count, int(due or 0)))
    return count


def reconcile(
    everyone: Annotated[
        bool, typer.Option("--all", help="Every Stripe customer, not only the stale ones.")
    ] = False,
    customer: Annotated[
        list[str] | None, typer.Option(help="Only this Stripe customer id (repeatable).")
    ] = None,
) -> None:
    """Compare subscriptions with Stripe and heal what missed or lost webhooks left wrong."""
    from rich.console import Console
    from rich.progress import Progress
    from sqlalchemy import select

    from meterbill.auth.models import User
    from meterbill.billing.gateway import StripeGateway
    from meterbill.billing.reconcile import reconcile as run_reconcile
    from meterbill.billing.reconcile import stale_customers

    settings = Settings()
    gateway = StripeGateway(settings)
    if not gateway.configured:
        typer.echo(
            "meterbill: error: STRIPE_SECRET_KEY is not set: nothing to reconcile with", err=True
        )
        raise typer.Exit(2)
    db = _database(settings)
    now = utcnow()
    if customer:
        with db.reading() as session:
            rows = session.execute(
                select(User.id, User.stripe_customer_id).where(
                    User.stripe_customer_id.in_(customer)
                )
            ).all()
        targets = [(str(user_id), str(cus)) for user_id, cus in rows]
    else:
        targets = stale_customers(db, now, settings.reconcile_stale_days, everyone=everyone)
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("reconciling", total=len(targets))
        report = run_reconcile(
            db,
            settings,
            settings.catalog(),
            gateway,
            now,
            customers=targets,
            progress=lambda n: progress.advance(task, n),
        )
    db.dispose()
    typer.echo(
        f"customers checked: {report.customers}, subscriptions healed: {report.healed}, "
        f"failed: {report.failed}"
    )
    for user_id, customer_id, cause in report.failures:
        typer.echo(f"failed: user {user_id} (Stripe customer {customer_id}): {cause}", err=True)
    if report.failed:
        raise typer.Exit(1)


@jobs_app.command("list")
def jobs_list(
    failed: Annotated[bool, typer.Option("--failed", help="Only parked (failed) jobs.")] = False,
    status: Annotated[
        JobStatus | None, typer.Option(help="Only jobs in this state.", case_sensitive=False)
    ] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.", min=1, max=10_000)] = 50,
) -> None:
    """List jobs, newest first."""
    from rich.console import Console
    from rich.table import Table

    from meterbill.jobs.queue import list_jobs

    db = _database(Settings())
    with db.reading() as session:
        wanted = "failed" if failed else (status.value if status else None)
        rows = list_jobs(session, status=wanted, limit=limit)
    db.dispose()
    if not rows:
        typer.echo("no jobs" + (" parked" if failed else ""))
        return
    table = Table("id", "kind", "status", "attempts", "run at", "last error", box=None)
    for job in rows:
        table.add_row(
            str(job.id),
            job.kind,
            job.status,
            f"{job.attempts}/{job.max_attempts}",
            f"{job.run_at:%Y-%m-%d %H:%M:%S}",
            (job.last_error or "")[:80],
        )
    Console(width=160).print(table)


@jobs_app.command("retry")
def jobs_retry(
    job_id: Annotated[int, typer.Argument(help="The job's id.", min=1, max=2**63 - 1)],
) -> None:
    """Put a parked (failed) job back in the queue with a fresh set of attempts."""
    from meterbill.jobs.queue import retry_job

    db = _database(Settings())
    with db.transaction() as session:
        done = retry_job(session, job_id, utcnow())
    db.dispose()
    if not done:
        typer.echo(f"meterbill: error: no failed job with id {job_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"job {job_id} queued again")


def demo(
    users: Annotated[int, typer.Option(help="How many demo users.", min=1, max=10_000)] = 40,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 7,
) -> None:
    """Load a realistic demo dataset: users, subscriptions, Stripe events, usage, invoices."""
    from rich.console import Console
    from rich.progress import Progress

    from meterbill.demo import load_demo
    from meterbill.errors import NotADemoDatabase

    settings = Settings()
    db = _database(settings)
    try:
        with Progress(console=Console(stderr=True)) as progress:
            tasks: dict[str, Any] = {}

            def step(name: str, total: int) -> Any:
                tasks[name] = progress.add_task(name, total=total)
                return lambda n=1: progress.advance(tasks[name], n)

            summary = load_demo(db, settings, users=users, seed=seed, step=step)
    except NotADemoDatabase as exc:
        typer.echo(exc.message_en, err=True)
        raise typer.Exit(1) from None
    finally:
        db.dispose()
    typer.echo(", ".join(f"{key}: {value}" for key, value in summary.items()))
    last = f"demo-{users:03d}"
    typer.echo(f"demo users: demo-001 … {last} (loading again adds nothing)")
    if settings.jwt_secret:
        typer.echo("a token for one of them: meterbill token demo-001")
    else:
        typer.echo(
            "a token for one of them: set METERBILL_JWT_SECRET (in the environment or "
            "METERBILL_HOME/.env), then run: meterbill token demo-001"
        )


def register(app: typer.Typer) -> None:
    """Add these commands to the `meterbill` CLI."""
    app.command()(worker)
    app.command()(reconcile)
    app.command()(demo)
    app.add_typer(jobs_app, name="jobs")
