"""The plan catalog: the seed's three plans by default, a TOML file, env overrides on top."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import base_settings


def test_seed_plans_exist_without_any_file() -> None:
    catalog = base_settings("sqlite://", plans_file=None).catalog()
    assert {name: plan.limits for name, plan in catalog.plans.items()} == {
        "free": {"api_calls": 300, "tokens": 100_000},
        "premium": {"api_calls": 3_000, "tokens": 1_000_000},
        "pro": {"api_calls": 30_000, "tokens": 10_000_000},
    }
    assert catalog.plan_for_price("price_premium_test").name == "premium"  # type: ignore[union-attr]
    assert catalog.plan_for_price("price_unknown") is None
    assert catalog.plan_for_price(None) is None


def test_plans_file_then_environment(tmp_path: Path) -> None:
    plans = tmp_path / "plans.toml"
    plans.write_text(
        """
[meters.images]
aggregation = "count"

[plans.premium]
stripe_price = "price_from_file"
alert_ratio = 0.9
limits = { api_calls = 5000, images = 50 }

[plans.team]
stripe_price = "price_team"
on_limit = "allow"
limits = { api_calls = 100000 }
""",
        encoding="utf-8",
    )
    settings = base_settings(
        "sqlite://", plans_file=plans, stripe_price_premium=None, limit_premium_api_calls=7000
    )
    catalog = settings.catalog()
    premium = catalog.plan("premium")
    assert premium.stripe_price == "price_from_file" and premium.alert_ratio == 0.9
    assert premium.limits == {"api_calls": 7000, "tokens": 1_000_000, "images": 50}
    assert catalog.plan("team").on_limit == "allow"
    assert catalog.plan_for_price("price_team").name == "team"  # type: ignore[union-attr]
    assert catalog.meters["images"].aggregation == "count"
