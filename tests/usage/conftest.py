"""Fixtures for the metering API: a running meterbill with an API key, and event makers."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from meterbill.auth.service import create_api_key
from meterbill.db import Database
from meterbill.usage.models import ConsumptionEvent, UsageAlert, UsageDaily
from tests.conftest import Service


@dataclass
class Metering:
    """A running meterbill and a server-to-server key to talk to it."""

    service: Service
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    def send(self, events: list[dict[str, Any]]) -> httpx.Response:
        return self.service.client.post(
            "/api/v1/usage/events", json={"events": events}, headers=self.headers
        )

    def check(self, user_id: str, metric: str = "api_calls") -> httpx.Response:
        return self.service.client.get(
            "/api/v1/usage/check",
            params={"user_id": user_id, "metric": metric},
            headers=self.headers,
        )

    def consume(self, user_id: str, metric: str = "api_calls", **extra: Any) -> httpx.Response:
        return self.service.client.post(
            "/api/v1/usage/consume",
            json={"user_id": user_id, "metric": metric, **extra},
            headers=self.headers,
        )

    def stored_events(self) -> int:
        with self.service.db.reading() as session:
            return int(session.scalar(select(func.count()).select_from(ConsumptionEvent)) or 0)

    def daily_total(self, user_id: str, metric: str = "api_calls") -> int:
        with self.service.db.reading() as session:
            total = session.scalar(
                select(func.sum(UsageDaily.total)).where(
                    UsageDaily.user_id == user_id, UsageDaily.metric == metric
                )
            )
            return int(total or 0)

    def alerts(self) -> list[tuple[str, str, str]]:
        with self.service.db.reading() as session:
            rows = session.execute(
                select(UsageAlert.user_id, UsageAlert.metric, UsageAlert.level).order_by(
                    UsageAlert.user_id, UsageAlert.metric, UsageAlert.level
                )
            ).all()
            return [tuple(row) for row in rows]  # type: ignore[misc]


def api_key_for(db: Database) -> str:
    with db.transaction() as session:
        return create_api_key(session, "tests")


@pytest.fixture
def make_metering(make_service: Callable[..., Service]) -> Callable[..., Metering]:
    def start(**overrides: Any) -> Metering:
        service = make_service(**overrides)
        return Metering(service, api_key_for(service.db))

    return start


@pytest.fixture
def metering(make_metering: Callable[..., Metering]) -> Metering:
    return make_metering()


def event(
    user_id: str = "user-1",
    metric: str = "api_calls",
    value: int = 1,
    *,
    id: str | None = None,
    at: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": id or f"evt-{uuid.uuid4().hex}",
        "user_id": user_id,
        "metric": metric,
        "value": value,
        "timestamp": (at or datetime.now(UTC) - timedelta(seconds=1)).isoformat(),
        **extra,
    }
