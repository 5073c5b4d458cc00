"""schemathesis over the served OpenAPI document, on each database: no 5xx, and every
status and body as documented. Stripe is configured but unreachable, so checkout and
portal answer the documented 503."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from meterbill.auth.service import create_api_key
from tests.conftest import Service, free_port

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 25


@pytest.fixture
def contract_service(make_service: Callable[..., Service]) -> Service:
    unreachable = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    return make_service(stripe_secret_key="sk_test_unreachable", stripe_api_base=unreachable)


def test_every_operation_answers_as_documented(contract_service: Service) -> None:
    service = contract_service
    with service.db.transaction() as session:
        key = create_api_key(session, "contract")
    # Some usage for "user-1", so the reads have something to report.
    service.client.post(
        "/api/v1/usage/consume",
        json={"user_id": "user-1", "metric": "api_calls", "value": 5},
        headers={"X-API-Key": key},
    ).raise_for_status()
    headers = {"Authorization": f"Bearer {service.token('user-1')}", "X-API-Key": key}
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            case.call_and_validate(base_url=service.url, headers=headers, checks=CHECKS)

        try:
            run()
        except Exception as exc:  # collect all operations' failures, report them together
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
