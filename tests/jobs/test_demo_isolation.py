"""`meterbill demo` writes only to a database made for it, and nothing it causes leaves
meterbill: no email reaches a mailbox, no webhook a receiver, whatever the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

from sqlalchemy import func, select

from meterbill.auth.models import User
from meterbill.auth.service import lock_user
from meterbill.db import Database, utcnow
from meterbill.jobs.models import Job
from meterbill.jobs.worker import Worker
from meterbill.sandbox import claim_for_demo
from tests.conftest import Service, base_settings, stripe_peer_price
from tests.jobs.conftest import WEBHOOK_SECRET, Receiver, SmtpServer
from tests.stripe_peer import StripePeer


def _meterbill(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meterbill", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _count(db: Database, model: type) -> int:
    with db.reading() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_demo_refuses_a_database_with_real_users(database_url: str) -> None:
    db = Database(database_url)
    with db.transaction() as session:
        lock_user(session, "real-customer", "customer@example.com")
    result = _meterbill({"METERBILL_DATABASE_URL": database_url}, "-q", "demo", "--users", "5")
    assert result.returncode != 0
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert "real users or invoices" in line and "Traceback" not in result.stderr
    with db.reading() as session:
        assert session.scalars(select(User.id)).all() == ["real-customer"]
    assert _count(db, Job) == 0
    db.dispose()


def test_demo_jobs_reach_no_mailbox_and_no_receiver(
    database_url: str, smtp: SmtpServer, receiver: Receiver
) -> None:
    outside = {
        "METERBILL_DATABASE_URL": database_url,
        "METERBILL_SMTP_URL": smtp.url,
        "METERBILL_WEBHOOK_URLS": receiver.url,
        "METERBILL_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "METERBILL_LOG_LEVEL": "WARNING",
    }
    db = Database(database_url)
    # A worker already running when the demo is loaded, configured to reach the outside.
    settings = base_settings(
        database_url,
        smtp_url=smtp.url,
        webhook_urls=receiver.url,
        webhook_secret=WEBHOOK_SECRET,
    )
    early = Worker(settings, db, schedules=())
    assert early.run_pending() == 0

    loaded = _meterbill(outside, "demo", "--users", "40")
    assert loaded.returncode == 0, loaded.stderr
    queued = _count(db, Job)
    assert queued > 0  # the demo's failed payments and alerts made emails and webhooks

    assert early.run_pending() > 0
    burst = _meterbill(outside, "worker", "--burst")
    assert burst.returncode == 0, burst.stderr
    assert smtp.messages == []
    assert receiver.deliveries == []
    with db.reading() as session:
        left = session.scalars(select(Job.status).where(Job.status != "done")).all()
    assert left == []  # every job ran (and sent nothing)
    # Loading again into its own database is fine.
    again = _meterbill(outside, "demo", "--users", "40")
    assert again.returncode == 0, again.stderr
    db.dispose()


def test_the_api_on_a_demo_database_never_calls_stripe(
    make_service: Callable[..., Service], stripe_peer: StripePeer, database_url: str
) -> None:
    """Served with a Stripe key in the environment, a demo database still calls no Stripe:
    its users, customers and subscriptions are made up (the worker already sends nothing)."""
    claim_for_demo(Database(database_url), utcnow())
    stripe_peer.reset()
    service = make_service(
        stripe_secret_key="sk_test_meterbill",
        stripe_api_base=stripe_peer.url,
        stripe_price_premium=stripe_peer_price(stripe_peer, 900),
    )
    stripe_peer.reset_calls()
    response = service.client.post(
        "/api/v1/billing/checkout", json={"plan": "premium"}, headers=service.auth("demo-001")
    )
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "stripe_not_configured"
    assert stripe_peer.calls("/v1/") == 0
