"""Limits that cannot be bypassed: the event's own month, ids scoped per user, totals that
never overflow, and alerts that follow the plan in effect (issue 9)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from meterbill.billing.models import Subscription
from meterbill.jobs.models import Job
from meterbill.usage.models import UsageAlert, UsageMonthly
from tests.conftest import Clock
from tests.usage.conftest import Metering, event

BIGINT = 2**63 - 1
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _monthly(metering: Metering, user: str, metric: str = "api_calls") -> dict[str, int]:
    with metering.service.db.reading() as session:
        rows = session.execute(
            select(UsageMonthly.month, UsageMonthly.total).where(
                UsageMonthly.user_id == user, UsageMonthly.metric == metric
            )
        ).all()
    return {month: total for month, total in rows}


def test_a_backdated_consume_counts_against_the_limit_of_its_own_month(
    make_metering: Callable[..., Metering],
) -> None:
    metering = make_metering(clock=Clock(NOW), limit_free_api_calls=3)
    february = (NOW - timedelta(days=18)).isoformat()
    answers = [metering.consume("mona", timestamp=february) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[-1].json()["used"] == 3  # February's figure, not March's

    refused = metering.consume("mona", timestamp=february)
    assert refused.status_code == 429
    assert refused.json()["code"] == "hard_limit_reached"
    assert _monthly(metering, "mona") == {"2026-02": 3}
    # March is untouched: a consume now is still allowed.
    assert metering.consume("mona").status_code == 200


def test_a_consume_just_past_the_months_end_counts_against_the_next_month(
    make_metering: Callable[..., Metering],
) -> None:
    end = datetime(2026, 3, 31, 23, 58, tzinfo=UTC)
    metering = make_metering(clock=Clock(end), limit_free_api_calls=2)
    april = (end + timedelta(minutes=4)).isoformat()  # within the 5-minute allowance
    assert [metering.consume("noah", timestamp=april).status_code for _ in range(2)] == [200, 200]
    assert metering.consume("noah", timestamp=april).status_code == 429
    assert _monthly(metering, "noah") == {"2026-04": 2}


def test_another_users_event_id_does_not_let_a_blocked_user_through(
    make_metering: Callable[..., Metering],
) -> None:
    metering = make_metering(limit_free_api_calls=1)
    assert metering.consume("olga", id="req-1").json()["duplicate"] is False
    assert metering.consume("paul", id="req-0").status_code == 200  # paul is at his limit

    taken = metering.consume("paul", id="req-1")  # olga's id, not paul's
    assert taken.status_code == 429
    assert taken.json()["code"] == "hard_limit_reached"
    again = metering.consume("olga", id="req-1")  # olga's own retry is a duplicate
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert metering.daily_total("olga") == 1 and metering.daily_total("paul") == 1


def test_ingestion_scopes_event_ids_per_user_and_stays_idempotent(metering: Metering) -> None:
    batch = [event("quinn", id="shared"), event("rita", id="shared", value=2)]
    first = metering.send(batch)
    assert first.status_code == 202 and first.json()["new"] == 2
    assert metering.daily_total("quinn") == 1 and metering.daily_total("rita") == 2
    again = metering.send(batch)
    assert again.json() == {"received": 2, "new": 0, "duplicates": 2}
    assert metering.stored_events() == 2


def _allowing(tmp_path: Path) -> Path:
    plans = tmp_path / "plans.toml"
    plans.write_text('[plans.free]\non_limit = "allow"\n')
    return plans


def test_totals_stay_exact_up_to_bigint_and_beyond_is_a_422(
    make_metering: Callable[..., Metering], tmp_path: Path
) -> None:
    metering = make_metering(plans_file=_allowing(tmp_path))
    first = metering.consume("sam", "tokens", value=BIGINT - 1)
    assert first.status_code == 200
    assert first.json()["used"] == BIGINT - 1
    assert metering.consume("sam", "tokens", value=1).json()["used"] == BIGINT

    over = metering.consume("sam", "tokens", value=1)
    assert over.status_code == 422
    assert over.json()["code"] == "usage_total_overflow"
    check = metering.check("sam", "tokens").json()
    assert check["used"] == BIGINT and type(check["used"]) is int
    assert _monthly(metering, "sam", "tokens") == {datetime.now(UTC).strftime("%Y-%m"): BIGINT}

    too_big = metering.consume("sam", "tokens", value=BIGINT + 1)
    assert too_big.status_code == 422 and too_big.json()["code"] == "validation_error"


def test_a_batch_whose_sum_overflows_is_a_422_and_records_nothing(
    make_metering: Callable[..., Metering], tmp_path: Path
) -> None:
    metering = make_metering(plans_file=_allowing(tmp_path))
    half = 2**62
    answer = metering.send([event("tina", "tokens", half), event("tina", "tokens", half)])
    assert answer.status_code == 422
    assert answer.json()["code"] == "usage_total_overflow"
    assert metering.stored_events() == 0

    assert metering.send([event("tina", "tokens", BIGINT)]).status_code == 202
    on_top = metering.send([event("uma", "tokens", 5), event("tina", "tokens", 1)])
    assert on_top.status_code == 422
    assert on_top.json()["code"] == "usage_total_overflow"
    assert metering.stored_events() == 1
    assert metering.daily_total("tina", "tokens") == BIGINT
    assert metering.daily_total("uma", "tokens") == 0
    alone = metering.send([event("tina", "tokens", BIGINT + 1)])
    assert alone.status_code == 422 and alone.json()["code"] == "invalid_events"


def _subscribe(metering: Metering, user: str, plan: str, status: str = "active") -> None:
    with metering.service.db.transaction() as session:
        session.add(
            Subscription(
                user_id=user,
                plan=plan,
                status=status,
                stripe_subscription_id=f"sub_{user}_{plan}_{status}",
                start_date=datetime.now(UTC) - timedelta(seconds=len(plan)),
            )
        )


def _end_subscription(metering: Metering, user: str) -> None:
    with metering.service.db.transaction() as session:
        for row in session.scalars(select(Subscription).where(Subscription.user_id == user)):
            row.status = "canceled"
            row.end_date = datetime.now(UTC)


def _alerts(metering: Metering, user: str) -> list[tuple[str, int, int]]:
    with metering.service.db.reading() as session:
        rows = session.execute(
            select(UsageAlert.level, UsageAlert.limit, UsageAlert.used)
            .where(UsageAlert.user_id == user)
            .order_by(UsageAlert.id)
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def _handed_on(metering: Metering) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(level, limit) of the quota emails and of the quota webhooks enqueued."""
    with metering.service.db.reading() as session:
        jobs = session.scalars(select(Job).order_by(Job.id)).all()
    payloads = [(job.kind, json.loads(job.payload)) for job in jobs]
    emails = [p["params"] for kind, p in payloads if kind == "email.send"]
    hooks = [p["data"] for kind, p in payloads if kind == "webhook.event"]
    hooks = [h for h in hooks if "level" in h]
    return (
        [(e["level"], e["limit"]) for e in emails],
        [(h["level"], h["limit"]) for h in hooks],
    )


def test_an_upgrade_alerts_again_at_the_new_plans_thresholds(
    make_metering: Callable[..., Metering],
) -> None:
    metering = make_metering(limit_free_api_calls=10, limit_premium_api_calls=100)
    metering.send([event("vera", value=8)])
    assert _alerts(metering, "vera") == [("soft", 10, 8)]

    _subscribe(metering, "vera", "premium")
    metering.send([event("vera", value=71)])  # 79 % of the new limit
    assert _alerts(metering, "vera") == [("soft", 10, 8)]
    assert metering.consume("vera").json()["used"] == 80  # 80 %: the new soft threshold
    metering.send([event("vera", value=20)])  # 100 %
    assert _alerts(metering, "vera") == [("soft", 10, 8), ("soft", 100, 80), ("hard", 100, 100)]
    emails, hooks = _handed_on(metering)
    assert emails == [(80, 10), (80, 100), (100, 100)]
    assert hooks == [(80, 10), (80, 100), (100, 100)]


def test_a_downgrade_that_leaves_the_user_over_the_new_limit_alerts_on_the_next_event(
    make_metering: Callable[..., Metering],
) -> None:
    metering = make_metering(limit_free_api_calls=10, limit_premium_api_calls=100)
    metering.send([event("will", value=0)])  # the user exists
    _subscribe(metering, "will", "premium")
    metering.send([event("will", value=50)])
    assert _alerts(metering, "will") == []

    _end_subscription(metering, "will")  # back on free: 50 used of 10
    refused = metering.consume("will")  # the free plan blocks; the alert is still due
    assert refused.status_code == 429
    assert _alerts(metering, "will") == [("soft", 10, 50), ("hard", 10, 50)]
    metering.send([event("will", value=1)])  # once: nothing more on the next event
    assert _alerts(metering, "will") == [("soft", 10, 50), ("hard", 10, 50)]
    emails, hooks = _handed_on(metering)
    assert emails == [(80, 10), (100, 10)]
    assert hooks == [(80, 10), (100, 10)]


def test_a_downgrade_alerts_on_the_next_ingested_event(
    make_metering: Callable[..., Metering],
) -> None:
    metering = make_metering(limit_free_api_calls=10, limit_premium_api_calls=100)
    metering.send([event("xena", value=0)])
    _subscribe(metering, "xena", "premium")
    metering.send([event("xena", value=9)])
    _end_subscription(metering, "xena")
    metering.send([event("xena", value=0)])  # 9 of 10: the soft threshold only
    assert _alerts(metering, "xena") == [("soft", 10, 9)]


def test_what_a_process_remembers_of_one_database_s_alerts_hides_none_of_another_s(
    make_metering: Callable[..., Metering],
) -> None:
    # Ingestion skips the alerts its process saw recorded; two databases served by one
    # process (as here) each get their own alerts for the same user.
    for _ in range(2):
        metering = make_metering(limit_free_api_calls=10)
        metering.send([event("wendy", value=10)])
        metering.send([event("wendy", value=1)])
        assert _alerts(metering, "wendy") == [("soft", 10, 10), ("hard", 10, 10)]
