"""The consume and read paths written as single statements (PostgreSQL) keep every rule:
the plan in effect is the one `effective_plan` gives, one id counts once under
concurrency, and connections dropped by the database are replaced before they are used."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from itertools import product

from sqlalchemy import select, text

from meterbill.billing.duplicates import duplicates_of
from meterbill.billing.models import Subscription
from meterbill.billing.subscriptions import (
    PAYING_STATUSES,
    current_subscription,
    effective_plan,
)
from meterbill.db import IDLE_PING_SECONDS
from meterbill.usage.models import UsageAlert
from tests.usage.conftest import Metering, event

STATUSES = (
    "active",
    "trialing",
    "past_due",
    "unpaid",
    "paused",
    "canceled",
    "incomplete",
    "incomplete_expired",
)


def _subscriptions_of_every_kind(metering: Metering, now: datetime) -> dict[str, str]:
    """Users with an older (premium) and a newer (pro) subscription, every pair of statuses
    and graces, the two started days apart or in the same second (then the row made first
    is the older); each user's plan in effect as `effective_plan` gives it."""
    graces = (None, now + timedelta(days=1), now - timedelta(days=1))
    cases = list(product(STATUSES, STATUSES, graces, (2, 1)))
    with metering.service.db.transaction() as session:
        for n, (older, newer, grace, older_age) in enumerate(cases):
            user = f"plan-{n}"
            metering_user = {"id": user, "plan": "free", "created_at": now, "updated_at": now}
            session.execute(
                text(
                    "INSERT INTO saas_users (id, plan, created_at, updated_at) "
                    "VALUES (:id, :plan, :created_at, :updated_at)"
                ),
                metering_user,
            )
            for tag, age, status, plan in ((2, older_age, older, "premium"), (1, 1, newer, "pro")):
                session.add(
                    Subscription(
                        user_id=user,
                        plan=plan,
                        status=status,
                        stripe_subscription_id=f"sub_{n}_{tag}",
                        start_date=now - timedelta(days=age),
                        grace_period_end=grace,
                    )
                )
                session.flush()  # the older row gets the smaller id
    with metering.service.db.reading() as session:
        return {
            f"plan-{n}": effective_plan(current_subscription(session, f"plan-{n}"), now)
            for n in range(len(cases))
        }


def test_the_plan_in_effect_is_the_one_effective_plan_gives(metering: Metering) -> None:
    expected = _subscriptions_of_every_kind(metering, datetime.now(UTC))
    answered = {user: metering.check(user).json()["plan"] for user in expected}
    assert answered == expected


def test_the_plan_is_that_of_the_subscription_duplicates_keeps(metering: Metering) -> None:
    """Of two subscriptions Stripe bills, the one billing.duplicates keeps (the oldest
    paying one) decides the plan, so canceling the other changes nothing: both paying,
    the older one's premium applies, not the newer one's pro."""
    expected = _subscriptions_of_every_kind(metering, datetime.now(UTC))
    with metering.service.db.reading() as session:
        status = dict(
            session.execute(select(Subscription.stripe_subscription_id, Subscription.status)).all()
        )
        decided = {user: current_subscription(session, user) for user in expected}
        kept = {user: duplicates_of(session, user)[0] for user in expected}
    for user, subscription in decided.items():
        if kept[user] is not None:
            assert subscription is not None, user
            assert subscription.stripe_subscription_id == kept[user], user
    both_paying = [
        user
        for user in expected
        if {status[f"sub_{user.removeprefix('plan-')}_{tag}"] for tag in (1, 2)}
        <= set(PAYING_STATUSES)
    ]
    assert len(both_paying) == 2 * 2 * 3 * 2  # statuses, statuses, graces, start dates
    assert {expected[user] for user in both_paying} == {"premium"}


def test_ingestion_alerts_on_the_limit_of_the_plan_effective_plan_gives(
    make_metering: Callable[..., Metering],
) -> None:
    # Each plan its own limit: the limit an alert names tells which plan it was decided on
    # (on PostgreSQL the recording statement resolves the plans, on SQLite `plans_of`).
    limits = {"free": 10, "premium": 100, "pro": 1000}
    metering = make_metering(**{f"limit_{plan}_api_calls": n for plan, n in limits.items()})
    expected = _subscriptions_of_every_kind(metering, datetime.now(UTC))
    assert metering.send([event(user, value=5_000) for user in expected]).status_code == 202
    with metering.service.db.reading() as session:
        rows = session.execute(select(UsageAlert.user_id, UsageAlert.limit)).all()
    alerted: dict[str, set[int]] = {}
    for user, limit in rows:
        alerted.setdefault(user, set()).add(limit)
    assert alerted == {user: {limits[plan]} for user, plan in expected.items()}


def test_concurrent_consumes_with_one_id_count_once(metering: Metering) -> None:
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: metering.consume("yann", id="same-id"), range(16)))
    assert [a.status_code for a in answers] == [200] * 16
    assert sorted(a.json()["duplicate"] for a in answers) == [False] + [True] * 15
    assert {a.json()["used"] for a in answers} == {1}
    assert metering.daily_total("yann") == 1 and metering.stored_events() == 1


def test_connections_the_database_dropped_are_replaced_before_use(
    make_metering: Callable[..., Metering],
) -> None:
    metering = make_metering()
    token = metering.service.auth("zoe")
    assert metering.consume("zoe").status_code == 200
    assert metering.check("zoe").status_code == 200
    db = metering.service.db
    if not db.sqlite:  # SQLite has no server to drop connections
        with db.engine.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
    time.sleep(IDLE_PING_SECONDS + 0.5)
    assert metering.consume("zoe").status_code == 200
    assert metering.check("zoe").json()["used"] == 2
    answer = metering.service.client.get("/api/v1/billing/consumption", headers=token)
    assert answer.status_code == 200
    assert answer.json()["consumption"]["total_api_calls"] == 2
