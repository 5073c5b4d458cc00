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
