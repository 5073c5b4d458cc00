"""Many clients at once: limits hold, duplicates count once, alerts are recorded once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from sqlalchemy import select

from meterbill.jobs.models import Job
from tests.usage.conftest import Metering, event


def test_concurrent_consumers_never_pass_a_blocking_limit(
    make_metering: Callable[..., Metering],
) -> None:
    metering = make_metering(limit_free_api_calls=25)
    barrier = threading.Barrier(8)

    def consumer(_: int) -> list[int]:
        with httpx.Client(base_url=metering.service.url, timeout=60) as client:
            barrier.wait()
            return [
                client.post(
                    "/api/v1/usage/consume",
                    json={"user_id": "mia", "metric": "api_calls"},
                    headers=metering.headers,
                ).status_code
                for _ in range(6)
            ]

    with ThreadPoolExecutor(8) as pool:
        codes = [code for codes in pool.map(consumer, range(8)) for code in codes]
    assert codes.count(200) == 25
    assert codes.count(429) == 48 - 25
    assert metering.daily_total("mia") == 25
    assert metering.stored_events() == 25


def test_duplicate_ids_across_concurrent_batches_count_once(metering: Metering) -> None:
    # Six batches of 400 events drawn from 1,000 ids, so most ids arrive several times at once.
    events = [event(f"user-{i % 7}", value=i % 5 + 1, id=f"shared-{i}") for i in range(1000)]
    batches = [[events[(k * 157 + j) % 1000] for j in range(400)] for k in range(6)]
    barrier = threading.Barrier(len(batches))

    def send(batch: list[dict[str, Any]]) -> dict[str, int]:
        with httpx.Client(base_url=metering.service.url, timeout=60) as client:
            barrier.wait()
            answer = client.post(
                "/api/v1/usage/events", json={"events": batch}, headers=metering.headers
            )
            assert answer.status_code == 202, answer.text
            return dict(answer.json())

    with ThreadPoolExecutor(len(batches)) as pool:
        answers = list(pool.map(send, batches))
    sent = {e["id"]: e for batch in batches for e in batch}
    assert sum(a["new"] for a in answers) == len(sent)
    assert sum(a["duplicates"] for a in answers) == 6 * 400 - len(sent)
    assert metering.stored_events() == len(sent)
    for user in {e["user_id"] for e in sent.values()}:
        expected = sum(e["value"] for e in sent.values() if e["user_id"] == user)
        assert metering.daily_total(user) == expected


def test_alerts_are_recorded_once_under_concurrent_ingestion(
    make_metering: Callable[..., Metering],
) -> None:
    metering = make_metering(limit_free_api_calls=100)
    barrier = threading.Barrier(10)

    def send(index: int) -> None:
        with httpx.Client(base_url=metering.service.url, timeout=60) as client:
            barrier.wait()
            for _ in range(3):  # 10 clients x 3 batches x 5 = 150 % of the limit
                batch = [event(user, value=1) for user in ("nina", "omar") for _ in range(5)]
                client.post(
                    "/api/v1/usage/events", json={"events": batch}, headers=metering.headers
                ).raise_for_status()

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(send, range(10)))
    assert metering.daily_total("nina") == 150
    assert metering.alerts() == [
        ("nina", "api_calls", "hard"),
        ("nina", "api_calls", "soft"),
        ("omar", "api_calls", "hard"),
        ("omar", "api_calls", "soft"),
    ]
    with metering.service.db.reading() as session:
        kinds = session.scalars(
            select(Job.kind).where(Job.kind.in_(["email.send", "webhook.event"]))
        )
        assert sorted(kinds) == ["email.send"] * 4 + ["webhook.event"] * 4  # handed on once
