"""Plans are discoverable: GET /api/v1/billing/plans and `meterbill plans`; a bad plans file
names the file, the key and the reason; an unlimited metric reads null everywhere."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from meterbill.auth.service import create_api_key
from meterbill.config import PlansFileError
from tests.conftest import Service, base_settings, run_meterbill

PLANS = """
[meters.images]
aggregation = "count"

[plans.team]
stripe_price = "price_team"
on_limit = "allow"
limits = { api_calls = 100000 }
"""


def test_plans_list_prices_from_stripe_and_limits(stripe_service: Service) -> None:
    answer = stripe_service.client.get("/api/v1/billing/plans")
    assert answer.status_code == 200
    plans = {plan["name"]: plan for plan in answer.json()["plans"]}
    assert list(plans) == ["free", "premium", "pro"]
    assert plans["premium"]["price"] == {"amount": 900, "currency": "eur", "interval": "month"}
    assert plans["pro"]["price"]["amount"] == 2900
    assert plans["free"]["price"] is None and plans["free"]["stripe_price"] is None
    assert plans["free"]["limits"] == {"api_calls": 300, "tokens": 100_000}
    assert plans["pro"]["on_limit"] == "block"


def test_plans_without_stripe_still_list_and_unlimited_reads_null(
    make_service: Callable[..., Service], tmp_path: Path
) -> None:
    path = tmp_path / "plans.toml"
    path.write_text(PLANS, encoding="utf-8")
    service = make_service(plans_file=path)
    body = service.client.get("/api/v1/billing/plans").json()
    plans = {plan["name"]: plan for plan in body["plans"]}
    assert plans["team"]["limits"] == {"api_calls": 100_000, "tokens": None, "images": None}
    assert plans["team"]["price"] is None and plans["team"]["stripe_price"] == "price_team"
    assert {"name": "images", "aggregation": "count"} in body["metrics"]

    # "images" has no limit on the free plan: null in /usage/check and in /billing/consumption.
    with service.db.transaction() as session:
        key = create_api_key(session, "plans")
    check = service.client.get(
        "/api/v1/usage/check",
        params={"user_id": "user-1", "metric": "images"},
        headers={"X-API-Key": key},
    ).json()
    consumption = service.client.get("/api/v1/billing/consumption", headers=service.auth()).json()
    assert check["limit"] is None
    assert consumption["metrics"]["images"]["limit"] is None
    assert consumption["metrics"]["images"]["alert"] is None


@pytest.mark.parametrize(
    ("content", "key", "reason"),
    [
        ("[plans.pro\n", "", "is not valid TOML"),
        ('[plans.pro]\nlimits = { api_calls = "lots" }\n', "plans.pro.limits.api_calls", "integer"),
        ("[plans.pro]\non_limit = 'explode'\n", "plans.pro.on_limit", '"block" or "allow"'),
        ("[plans.pro]\nalert_ratio = 3\n", "plans.pro.alert_ratio", "from 0.01 to 1"),
        ("[plans.pro]\nprice = 'x'\n", "plans.pro.price", "unknown key"),
        ("[meters.x]\naggregation = 'avg'\n", "meters.x.aggregation", '"sum", "count"'),
        ("plans = 3\n", "plans", "must be a table"),
    ],
)
def test_a_bad_plans_file_names_the_file_the_key_and_the_reason(
    tmp_path: Path, content: str, key: str, reason: str
) -> None:
    path = tmp_path / "plans.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PlansFileError) as caught:
        base_settings("sqlite://", plans_file=path).catalog()
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}") and reason in message, message


def test_missing_plans_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PlansFileError, match=r"nope\.toml: cannot be read"):
        base_settings("sqlite://", plans_file=tmp_path / "nope.toml").catalog()


def run_cli(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run_meterbill(
        *args, env={"METERBILL_HOME": str(home), "METERBILL_DATABASE_URL": None, **env}
    )


def test_plans_command_lists_plans_and_refuses_a_bad_file(tmp_path: Path) -> None:
    listed = run_cli("plans", home=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "premium" in listed.stdout and "3000 api_calls" in listed.stdout
    bad = tmp_path / "plans.toml"
    bad.write_text("[plans.pro]\non_limit = 1\n", encoding="utf-8")
    refused = run_cli("plans", home=tmp_path, METERBILL_PLANS_FILE=str(bad))
    assert refused.returncode != 0
    assert "Traceback" not in refused.stderr
    assert f"{bad}: plans.pro.on_limit" in refused.stderr
