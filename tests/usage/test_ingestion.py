"""POST /api/v1/usage/events: idempotent bulk ingestion, validated as a whole."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from meterbill.auth.models import User
from tests.usage.conftest import Metering, event


def test_events_sent_twice_count_once(metering: Metering) -> None:
    first = [event("alice", value=2), event("alice", value=3), event("bob", "tokens", 40)]
    answer = metering.send(first)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"received": 3, "new": 3, "duplicates": 0}

    again = [*first, event("alice", value=5)]
    answer = metering.send(again)
    assert answer.json() == {"received": 4, "new": 1, "duplicates": 3}
    assert metering.daily_total("alice") == 10
    assert metering.daily_total("bob", "tokens") == 40
    assert metering.stored_events() == 4


def test_an_id_repeated_inside_one_batch_counts_once(metering: Metering) -> None:
    one = event("carol", value=7)
    answer = metering.send([one, one, {**one, "value": 100}])
    assert answer.json() == {"received": 3, "new": 1, "duplicates": 2}
    assert metering.daily_total("carol") == 7


def test_a_bad_batch_names_each_bad_event_and_stores_nothing(metering: Metering) -> None:
    now = datetime.now(UTC)
    batch = [
        event("dave"),
        event("dave", at=now - timedelta(days=36)),
        event("dave"),
        event("dave", "no_such_metric"),
        event("dave", value=-1),
        event("dave", at=now + timedelta(minutes=10)),
        {"id": "x", "user_id": "dave", "metric": "api_calls", "timestamp": "2026-11-25T10:00"},
        "not an event",
    ]
    answer = metering.send(batch)
    assert answer.status_code == 422
    body = answer.json()
    assert body["code"] == "invalid_events"
    assert [error["index"] for error in body["errors"]] == [1, 3, 4, 5, 6, 7]
    reasons = {error["index"]: error["reason"] for error in body["errors"]}
    # French by default, as every message (tests/usage/test_messages.py has the English)
    assert "35 jours" in reasons[1] and "futur" in reasons[5] and "décalage" in reasons[6]
    assert metering.stored_events() == 0
    with metering.service.db.reading() as session:
        assert session.get(User, "dave") is None


def test_unknown_users_are_created_on_the_free_plan(metering: Metering) -> None:
    assert metering.send([event("newcomer-1"), event("newcomer-2")]).status_code == 202
    with metering.service.db.reading() as session:
        users = session.scalars(select(User).where(User.id.like("newcomer-%"))).all()
        assert sorted((u.id, u.plan) for u in users) == [
            ("newcomer-1", "free"),
            ("newcomer-2", "free"),
        ]


def test_ingestion_needs_an_api_key(metering: Metering) -> None:
    client = metering.service.client
    assert client.post("/api/v1/usage/events", json={"events": []}).status_code == 401
    wrong = client.post(
        "/api/v1/usage/events", json={"events": []}, headers={"X-API-Key": "mb_nope_nope"}
    )
    assert wrong.status_code == 401
    assert metering.send([]).json() == {"received": 0, "new": 0, "duplicates": 0}


def test_more_than_ten_thousand_events_is_refused(metering: Metering) -> None:
    answer = metering.send([event("eve")] * 10_001)
    assert answer.status_code == 413
    assert answer.json()["code"] == "batch_too_large"
    assert metering.stored_events() == 0


def test_meters_from_the_plans_file_aggregate_as_declared(
    make_metering: Callable[..., Metering], tmp_path: Path
) -> None:
    plans = tmp_path / "plans.toml"
    plans.write_text(
        '[meters.storage_gb]\naggregation = "max"\n'
        '[meters.uploads]\naggregation = "count"\n'
        "[plans.free.limits]\nstorage_gb = 10\nuploads = 3\n",
        encoding="utf-8",
    )
    metering = make_metering(plans_file=plans)
    batch = [event("frank", "storage_gb", v) for v in (4, 9, 2)]
    batch += [event("frank", "uploads", 50), event("frank", "uploads", 70)]
    assert metering.send(batch).status_code == 202
    storage = metering.check("frank", "storage_gb").json()
    assert (storage["used"], storage["limit"], storage["remaining"]) == (9, 10, 1)
    assert storage["alert"] == "soft_limit_warning"
    uploads = metering.check("frank", "uploads").json()
    assert (uploads["used"], uploads["limit"], uploads["alert"]) == (2, 3, None)
    token = metering.service.auth("frank")
    report = metering.service.client.get("/api/v1/billing/consumption", headers=token).json()
    assert report["metrics"]["storage_gb"]["used"] == 9
    assert report["metrics"]["uploads"]["used"] == 2
