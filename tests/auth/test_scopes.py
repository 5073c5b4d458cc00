"""API key scopes on every endpoint: an ingest-only key sends usage and nothing else, a
read-only key checks quotas and nothing else; keys made before scopes keep every scope."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from meterbill.auth.models import ApiKey
from meterbill.auth.service import create_api_key
from tests.conftest import Service

PING = ("get", "/api/v1/usage/ping")  # any valid key: the clients' start-up check
ALLOWED = {
    "ingest": {("post", "/api/v1/usage/events"), ("post", "/api/v1/usage/consume"), PING},
    "read": {("get", "/api/v1/usage/check"), PING},
}
BODIES: dict[str, Any] = {
    "/api/v1/usage/events": {"events": []},
    "/api/v1/usage/consume": {"user_id": "u1", "metric": "api_calls", "value": 1},
}


def _call(service: Service, method: str, path: str, key: str) -> int:
    url = path.replace("{number}", "FACT-202601-0001")
    params = {"user_id": "u1", "metric": "api_calls"} if path.endswith("/check") else None
    answer = service.client.request(
        method, url, headers={"X-API-Key": key}, json=BODIES.get(path), params=params
    )
    return answer.status_code


def test_each_scope_opens_its_endpoints_and_nothing_else(service: Service) -> None:
    operations = [
        (method, path)
        for path, item in service.client.get("/openapi.json").json()["paths"].items()
        for method, operation in item.items()
        if operation.get("security")  # every authenticated endpoint
    ]
    assert len(operations) >= 10
    with service.db.transaction() as session:
        keys = {scope: create_api_key(session, scope, (scope,)) for scope in ALLOWED}
    for scope, key in keys.items():
        for method, path in operations:
            status = _call(service, method, path, key)
            if (method, path) in ALLOWED[scope]:
                assert status < 400, (scope, method, path, status)
            else:
                assert status in (401, 403), (scope, method, path, status)
    refused = service.client.get(
        "/api/v1/usage/check",
        params={"user_id": "u1", "metric": "api_calls"},
        headers={"X-API-Key": keys["ingest"], "Accept-Language": "en"},
    )
    assert refused.json() == {
        "error": "This API key lacks the read scope",
        "code": "insufficient_scope",
    }


def test_keys_made_before_scopes_keep_working(service: Service) -> None:
    with service.db.transaction() as session:
        key = create_api_key(session, "legacy")
        # what the migration gives a key that existed before it
        session.execute(update(ApiKey).values(scopes="ingest read admin"))
    for method, path in sorted(ALLOWED["ingest"] | ALLOWED["read"]):
        assert _call(service, method, path, key) < 400, (method, path)
