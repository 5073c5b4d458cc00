"""What the metering API says when it refuses: malformed JSON named as such, validation
details and quota refusals in the request's language, and when to retry."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from tests.conftest import Clock
from tests.usage.conftest import Metering


def test_malformed_json_says_so_in_the_requested_language(metering: Metering) -> None:
    client, headers = metering.service.client, metering.headers
    french = client.post(
        "/api/v1/usage/consume",
        content=b'{"user_id": ',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert french.status_code == 400
    assert french.json()["code"] == "invalid_json"
    assert french.json()["error"] == "Corps de requête JSON mal formé"
    english = client.post(
        "/api/v1/usage/consume",
        content=b"{oops",
        headers={**headers, "Content-Type": "application/json", "Accept-Language": "en"},
    )
    assert english.json()["error"] == "Malformed JSON request body"


def test_validation_details_follow_accept_language(metering: Metering) -> None:
    client, headers = metering.service.client, metering.headers
    body = {"user_id": "", "metric": "api_calls"}
    french = client.post("/api/v1/usage/consume", json=body, headers=headers).json()
    assert french["code"] == "validation_error"
    assert french["details"][0]["loc"] == ["body", "user_id"]
    assert french["details"][0]["msg"] == "Au moins 1 caractère(s)"
    english = client.post(
        "/api/v1/usage/consume", json=body, headers={**headers, "Accept-Language": "en"}
    ).json()
    assert english["details"][0]["msg"] == "String should have at least 1 character"


def test_quota_refusal_says_when_to_retry(make_metering: Callable[..., Metering]) -> None:
    clock = Clock(datetime(2026, 3, 31, 23, 0, tzinfo=UTC))
    metering = make_metering(limit_free_api_calls=1, clock=clock)
    assert metering.consume("rita").status_code == 200
    refused = metering.consume("rita")
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "3600"  # the limit starts over on April 1st
    assert refused.json()["retry_after"] == 3600


def test_alert_levels_read_the_same_in_header_check_and_consumption(
    make_metering: Callable[..., Metering],
) -> None:
    metering = make_metering(limit_free_api_calls=10)
    assert metering.consume("sam", value=8).status_code == 200  # 80 %: the soft alert
    service = metering.service
    consumption = service.client.get("/api/v1/billing/consumption", headers=service.auth("sam"))
    check = metering.check("sam")
    level = "soft_limit_warning"
    assert consumption.headers["X-Billing-Alert"] == level
    body = consumption.json()
    assert body["alert"] == level
    assert body["alerts"][0]["type"] == "soft"  # the seed's field, kept
    assert body["alerts"][0]["level"] == level
    assert body["metrics"]["api_calls"]["level"] == level
    assert check.headers["X-Billing-Alert"] == level and check.json()["alert"] == level
    assert metering.consume("sam", value=2).status_code == 200
    body = service.client.get("/api/v1/billing/consumption", headers=service.auth("sam")).json()
    assert body["alert"] == metering.check("sam").json()["alert"] == "hard_limit_reached"


def test_batch_reasons_follow_accept_language(metering: Metering) -> None:
    bad = [{"id": "e1", "user_id": "u", "metric": "nope", "timestamp": "2026-01-01T00:00"}]
    client, headers = metering.service.client, metering.headers
    french = client.post("/api/v1/usage/events", json={"events": bad}, headers=headers).json()
    assert french["error"] == "Événements invalides : aucun n'a été enregistré"
    assert french["errors"] == [{"index": 0, "reason": "metric : métrique inconnue 'nope'"}]
    english = client.post(
        "/api/v1/usage/events",
        json={"events": bad},
        headers={**headers, "Accept-Language": "en"},
    ).json()
    assert english["error"] == "Invalid events: none was recorded"
    assert english["errors"] == [{"index": 0, "reason": "metric: unknown metric 'nope'"}]
