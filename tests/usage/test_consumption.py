"""The seed's consumption endpoint: both metrics, alerts and header, UTC months."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from meterbill.db import utcnow
from meterbill.usage.recording import UsageEvent, record_usage
from tests.conftest import Clock, Service

CONSUMPTION = "/api/v1/billing/consumption"


def _record(service: Service, user: str, metric: str, value: int, at: datetime) -> None:
    event = UsageEvent(f"{user}-{metric}-{time.monotonic_ns()}", user, metric, value, at)
    with service.db.transaction() as session:
        record_usage(session, [event], utcnow())


@pytest.mark.parametrize("month", ["2026-13", "2026-1", "abc", "2026-00", "26-01", "2026-01-01"])
def test_malformed_month_is_422(service: Service, month: str) -> None:
    response = service.client.get(CONSUMPTION, params={"month": month}, headers=service.auth())
    assert response.status_code == 422
    assert response.json() == {
        "error": "Format mois invalide. Utiliser YYYY-MM",
        "code": "invalid_month",
    }


def test_a_month_without_usage_is_zero(service: Service) -> None:
    response = service.client.get(
        CONSUMPTION, params={"month": "2020-02"}, headers=service.auth("quiet")
    )
    assert response.status_code == 200 and "X-Billing-Alert" not in response.headers
    body = response.json()
    assert body["user_id"] == "quiet" and body["plan"] == "free" and body["month"] == "2020-02"
    assert body["consumption"] == {
        "total_api_calls": 0,
        "limit_api_calls": 300,
        "usage_pct": 0.0,
        "total_tokens": 0,
        "limit_tokens": 100000,
        "usage_pct_tokens": 0.0,
    }
    assert body["tokens"] == {"total_tokens": 0, "limit_tokens": 100000, "usage_pct": 0.0}
    assert body["alerts"] == []


def test_soft_then_hard_alerts_for_both_metrics(service: Service) -> None:
    now = utcnow()
    headers = service.auth("busy")
    _record(service, "busy", "api_calls", 239, now)
    first = service.client.get(CONSUMPTION, headers=headers)
    assert "X-Billing-Alert" not in first.headers

    _record(service, "busy", "api_calls", 1, now)  # 240 / 300 = 80 %
    soft = service.client.get(CONSUMPTION, headers=headers)
    assert soft.headers["X-Billing-Alert"] == "soft_limit_warning"
    assert soft.json()["consumption"]["usage_pct"] == 80.0
    assert [(a["type"], a["metric"]) for a in soft.json()["alerts"]] == [("soft", "api_calls")]

    _record(service, "busy", "tokens", 100_000, now)  # tokens at 100 % (seed flaw 7)
    hard = service.client.get(CONSUMPTION, headers=headers)
    assert hard.headers["X-Billing-Alert"] == "hard_limit_reached"
    body = hard.json()
    assert body["tokens"] == {"total_tokens": 100_000, "limit_tokens": 100_000, "usage_pct": 100.0}
    assert {(a["type"], a["metric"]) for a in body["alerts"]} == {
        ("soft", "api_calls"),
        ("hard", "tokens"),
    }


def test_other_users_usage_is_not_seen(service: Service) -> None:
    _record(service, "someone-else", "api_calls", 299, utcnow())
    body = service.client.get(
        CONSUMPTION, params={"user_id": "someone-else"}, headers=service.auth("me")
    ).json()
    assert body["user_id"] == "me" and body["consumption"]["total_api_calls"] == 0


def test_months_are_utc_months(make_service: Callable[..., Service]) -> None:
    """Seed flaw 6: `datetime.now()` in local time decided the month."""
    clock = Clock(datetime(2026, 11, 30, 23, 30, tzinfo=UTC))
    service = make_service(clock=clock)
    kiribati = timezone(timedelta(hours=14))
    # 2026-12-01 09:00 in Kiribati is still 2026-11-30 in UTC: it belongs to November.
    _record(service, "night", "api_calls", 7, datetime(2026, 12, 1, 9, 0, tzinfo=kiribati))
    _record(service, "night", "api_calls", 5, datetime(2026, 12, 1, 0, 30, tzinfo=UTC))
    body = service.client.get(CONSUMPTION, headers=service.auth("night")).json()
    assert body["month"] == "2026-11" and body["consumption"]["total_api_calls"] == 7
    december = service.client.get(
        CONSUMPTION, params={"month": "2026-12"}, headers=service.auth("night")
    ).json()
    assert december["consumption"]["total_api_calls"] == 5
