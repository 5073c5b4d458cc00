"""`meterbill demo` loads a dataset worth looking at, and loading it twice adds nothing."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select
from typer.testing import CliRunner

from meterbill.auth.models import User
from meterbill.billing.models import Subscription
from meterbill.billing.subscriptions import current_subscription, effective_plan
from meterbill.cli import app
from meterbill.db import Database, utcnow
from meterbill.usage.models import UsageDaily


def _summary(output: str) -> dict[str, str]:
    last = output.strip().splitlines()[-1]
    return dict(part.split(": ") for part in last.split(", "))


def test_demo_dataset_then_worker_burst(database_url: str) -> None:
    env = {"METERBILL_DATABASE_URL": database_url, "STRIPE_SECRET_KEY": ""}
    runner = CliRunner()
    first = runner.invoke(app, ["demo", "--users", "30"], env=env)
    assert first.exit_code == 0, first.output
    assert "users: 30" in first.output
    second = runner.invoke(app, ["demo", "--users", "30"], env=env)
    assert second.exit_code == 0, second.output
    assert _summary(second.output) == _summary(first.output)  # same ids: nothing added

    db = Database(database_url)
    with db.reading() as session:
        users = list(session.scalars(select(User).where(User.id.like("demo-%"))))
        locales = Counter(user.locale for user in users)
        statuses = Counter(session.scalars(select(Subscription.status)))
        plans = Counter(
            effective_plan(current_subscription(session, user.id), utcnow()) for user in users
        )
        usage = session.scalars(select(UsageDaily)).all()
    assert len(users) == 30 and set(locales) == {"fr", "en"}
    assert {"active", "past_due"} <= set(statuses)
    assert {"free", "premium"} <= set(plans)
    assert len(usage) > 30

    burst = runner.invoke(app, ["worker", "--burst"], env=env)  # schedules included
    assert burst.exit_code == 0, burst.output
    with db.reading() as session:
        stale = [
            user.id
            for user in session.scalars(select(User).where(User.id.like("demo-%")))
            if user.plan != effective_plan(current_subscription(session, user.id), utcnow())
        ]
    assert stale == []  # grace periods that ended are now written on the users
    db.dispose()
