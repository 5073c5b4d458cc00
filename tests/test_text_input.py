"""Text that no database can keep (a NUL character, which PostgreSQL refuses) is refused
at the door with a 4xx, never a 500, on every endpoint that takes text."""

from __future__ import annotations

from datetime import UTC, datetime

from meterbill.auth.service import create_api_key
from tests.conftest import Service


def _key(service: Service) -> dict[str, str]:
    with service.db.transaction() as session:
        return {"X-API-Key": create_api_key(session, "nul-test")}


def test_nul_characters_are_refused_everywhere(service: Service) -> None:
    key = _key(service)
    now = datetime.now(UTC).isoformat()
    token = service.client.get("/api/v1/billing/status", headers=service.auth("a\x00b"))
    assert token.status_code == 401

    events = service.client.post(
        "/api/v1/usage/events",
        json={
            "events": [
                {
                    "id": "ok-1",
                    "user_id": "u1",
                    "metric": "api_calls",
                    "value": 1,
                    "timestamp": now,
                },
                {
                    "id": "x\x00",
                    "user_id": "u\x00",
                    "metric": "api_calls",
                    "value": 1,
                    "timestamp": now,
                },
            ]
        },
        headers=key,
    )
    assert events.status_code == 422
    assert [e["index"] for e in events.json()["errors"]] == [1]

    consume = service.client.post("/api/v1/usage/consume", json={"user_id": "u\x00"}, headers=key)
    assert consume.status_code == 422
    check = service.client.get(
        "/api/v1/usage/check", params={"user_id": "a\x00b", "metric": "api_calls"}, headers=key
    )
    assert check.status_code == 422
    for suffix in ("", "/pdf"):
        invoice = service.client.get(
            f"/api/v1/billing/invoices/FACT%00x{suffix}", headers=service.auth()
        )
        assert invoice.status_code in (404, 422) and "code" in invoice.json()
    ok = service.client.get(
        "/api/v1/usage/check", params={"user_id": "u1", "metric": "api_calls"}, headers=key
    )
    assert ok.status_code == 200 and ok.json()["used"] == 0  # the bad batch stored nothing
