"""The OpenAPI document is the contract: auth schemes, every error with its real body, a
catalogue of codes kept in step with the code, and docs that work with no network."""

from __future__ import annotations

import re
from pathlib import Path

from meterbill.error_catalogue import error_classes, render
from tests.conftest import Service

ROOT = Path(__file__).resolve().parents[1]


def test_error_catalogue_is_up_to_date() -> None:
    written = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    assert written == render(), "run: python -m meterbill.error_catalogue > docs/errors.md"
    codes = {cls.code for cls in error_classes()}
    assert {"invalid_token", "hard_limit_reached", "invalid_json", "stripe_unavailable"} <= codes


def test_operations_declare_their_auth_scheme_and_every_error(service: Service) -> None:
    document = service.client.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["userToken"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": schemes["userToken"]["description"],
    }
    assert schemes["apiKey"]["in"] == "header" and schemes["apiKey"]["name"] == "X-API-Key"
    paths = document["paths"]
    for path in ("/api/v1/billing/status", "/api/v1/billing/invoices"):
        operation = paths[path]["get"]
        assert operation["security"] == [{"userToken": []}]
        assert "401" in operation["responses"] and "503" in operation["responses"]
    check = paths["/api/v1/usage/check"]["get"]
    assert {"apiKey": []} in check["security"]
    consume = paths["/api/v1/usage/consume"]["post"]["responses"]
    assert {"400", "401", "413", "422", "429"} <= set(consume)
    checkout = paths["/api/v1/billing/checkout"]["post"]["responses"]
    assert "stripe_unavailable" in checkout["503"]["description"]
    assert (
        "invalid_signature"
        in paths["/api/v1/billing/webhook"]["post"]["responses"]["400"]["description"]
    )
    error_ref = {"$ref": "#/components/schemas/ErrorOut"}
    for path, operations in paths.items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == error_ref, (method, path, status)
    assert document["components"]["schemas"]["ErrorOut"]["required"] == ["error", "code"]


def test_docs_and_redoc_load_nothing_from_the_network(service: Service) -> None:
    for page in ("/docs", "/redoc"):
        html = service.client.get(page)
        assert html.status_code == 200
        external = re.findall(r"""(?:src|href)=["'](https?://[^"']+)""", html.text)
        assert external == [], external
        for asset in re.findall(r"""(?:src|href)=["'](/docs/assets/[^"']+)""", html.text):
            served = service.client.get(asset)
            assert served.status_code == 200 and served.content, asset
    assert service.client.get("/docs/assets/../../etc/passwd").status_code == 404


def test_every_amount_is_an_integer_of_cents(service: Service) -> None:
    document = service.client.get("/openapi.json").json()
    amounts: list[tuple[str, str, object]] = []

    def walk(schema: object, where: str) -> None:
        if isinstance(schema, dict):
            for name, prop in (schema.get("properties") or {}).items():
                if "amount" in name or name in ("price", "total_ttc", "total_ht"):
                    types = {prop.get("type")} | {
                        option.get("type") for option in prop.get("anyOf", [])
                    }
                    amounts.append((where, name, types))
            for key, value in schema.items():
                walk(value, f"{where}.{key}")
        elif isinstance(schema, list):
            for item in schema:
                walk(item, where)

    walk(document["components"]["schemas"], "schemas")
    assert amounts, "no amount found: the walk is broken"
    for where, name, types in amounts:
        assert "number" not in types, (where, name, types)
