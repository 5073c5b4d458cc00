"""Quota decisions: GET /api/v1/usage/check and the atomic POST /api/v1/usage/consume."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from meterbill.jobs.models import Job
from meterbill.usage.alerts import pending_alerts
from tests.usage.conftest import Metering, event


def test_check_reports_usage_against_the_plan(make_metering: Callable[..., Metering]) -> None:
    metering = make_metering(limit_free_api_calls=10)
    fresh = metering.check("gina").json()
    assert fresh["allowed"] is True
    assert (fresh["used"], fresh["limit"], fresh["remaining"], fresh["alert"]) == (0, 10, 10, None)

    metering.send([event("gina", value=8)])
    answer = metering.check("gina")
    assert answer.headers["X-Billing-Alert"] == "soft_limit_warning"
    assert answer.json()["used"] == 8 and answer.json()["remaining"] == 2

    metering.send([event("gina", value=5)])
    over = metering.check("gina").json()
    assert over["allowed"] is False
    assert (over["used"], over["remaining"], over["alert"]) == (13, 0, "hard_limit_reached")


def test_check_refuses_an_unknown_metric(metering: Metering) -> None:
    answer = metering.check("gina", "bananas")
    assert answer.status_code == 422
    assert answer.json()["code"] == "unknown_metric"


def test_consume_refuses_malformed_input_with_422(metering: Metering) -> None:
    for extra in ({"value": -1}, {"value": 2**70}, {"value": "ten"}, {"user_id": ""}):
        body = {"user_id": "ivy", **extra}
        answer = metering.consume(body.pop("user_id"), **body)
        assert answer.status_code == 422, extra
        assert answer.json()["code"] == "validation_error"
    assert metering.stored_events() == 0


def test_consume_blocks_at_the_limit_and_records_nothing(
    make_metering: Callable[..., Metering],
) -> None:
    metering = make_metering(limit_free_api_calls=3)
    answers = [metering.consume("hugo") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.json()["used"] for a in answers] == [1, 2, 3]
    assert answers[2].headers["X-Billing-Alert"] == "hard_limit_reached"

    refused = metering.consume("hugo")
    assert refused.status_code == 429
    assert refused.headers["X-Billing-Alert"] == "hard_limit_reached"
    assert refused.json()["code"] == "hard_limit_reached"
    assert "error" in refused.json()
    assert metering.stored_events() == 3
    assert metering.daily_total("hugo") == 3


def test_consume_refuses_a_value_that_would_go_past_the_limit(
    make_metering: Callable[..., Metering],
) -> None:
    metering = make_metering(limit_free_tokens=100)
    assert metering.consume("ines", "tokens", value=90).status_code == 200
    assert metering.consume("ines", "tokens", value=11).status_code == 429
    assert metering.consume("ines", "tokens", value=10).status_code == 200
    assert metering.daily_total("ines", "tokens") == 100


def test_consume_with_the_same_id_counts_once(metering: Metering) -> None:
    first = metering.consume("jules", id="retry-me", value=1)
    again = metering.consume("jules", id="retry-me", value=1)
    assert first.json()["duplicate"] is False
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert metering.daily_total("jules") == 1


def test_a_plan_that_allows_overage_reports_but_does_not_block(
    make_metering: Callable[..., Metering], tmp_path: Path
) -> None:
    plans = tmp_path / "plans.toml"
    plans.write_text('[plans.free]\non_limit = "allow"\nlimits = { api_calls = 2 }\n')
    metering = make_metering(plans_file=plans)
    answers = [metering.consume("karl") for _ in range(4)]
    assert [a.status_code for a in answers] == [200] * 4
    assert answers[-1].headers["X-Billing-Alert"] == "hard_limit_reached"
    assert metering.check("karl").json()["allowed"] is True
    assert metering.daily_total("karl") == 4


def test_each_alert_level_is_recorded_once_a_month(make_metering: Callable[..., Metering]) -> None:
    metering = make_metering(limit_free_api_calls=10)
    metering.send([event("lea", value=7)])
    assert metering.alerts() == []
    metering.send([event("lea", value=1)])  # 80 %
    metering.send([event("lea", value=1)])
    assert metering.alerts() == [("lea", "api_calls", "soft")]
    metering.consume("lea")  # 100 %
    metering.send([event("lea", value=5)])  # recorded even past the limit (ingestion)
    assert metering.alerts() == [("lea", "api_calls", "hard"), ("lea", "api_calls", "soft")]

    with metering.service.db.reading() as session:
        assert pending_alerts(session) == []  # handed to notifications when recorded
        jobs = session.scalars(select(Job).order_by(Job.id)).all()
    handed = [(job.kind, json.loads(job.payload)) for job in jobs]
    emails = [p["params"] for kind, p in handed if kind == "email.send"]
    webhooks = [p["data"] for kind, p in handed if kind == "webhook.event"]
    assert [(e["level"], e["usage"], e["limit"]) for e in emails] == [(80, 8, 10), (100, 10, 10)]
    assert [(w["user_id"], w["metric"], w["level"]) for w in webhooks] == [
        ("lea", "api_calls", 80),
        ("lea", "api_calls", 100),
    ]
