"""The ingestion API's rules: validate a whole batch, then record it and note alerts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from meterbill.auth.service import api_key_name, verify_api_key
from meterbill.config import Catalog
from meterbill.db import Database
from meterbill.usage.alerts import alerts_for, record_alerts, recorded_alerts
from meterbill.usage.errors import BatchTooLarge, InvalidUsageBatch
from meterbill.usage.recording import BIGINT_MAX, WRITE_GATE, UsageEvent, record_usage

MAX_BATCH = 10_000
MAX_AGE = timedelta(days=35)
MAX_AHEAD = timedelta(minutes=5)
_MAX_VALUE = BIGINT_MAX  # the largest value a total can hold


@dataclass(frozen=True)
class IngestResult:
    received: int
    new: int
    duplicates: int
    alerts: int


def parse_events(payload: Any, catalog: Catalog, now: datetime) -> list[UsageEvent]:
    """The batch's events, or InvalidUsageBatch naming every bad event's index and reason.

    `payload` is `{"events": [...]}` (or the bare list). Nothing is partially accepted."""
    items = payload.get("events") if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        raise InvalidUsageBatch([{"index": None, "reason": 'expected {"events": [...]}'}])
    if len(items) > MAX_BATCH:
        raise BatchTooLarge(MAX_BATCH)
    events: list[UsageEvent] = []
    errors: list[dict[str, Any]] = []
    earliest, latest = now - MAX_AGE, now + MAX_AHEAD
    for index, item in enumerate(items):
        try:
            events.append(_event(item, catalog, earliest, latest))
        except ValueError as exc:
            errors.append({"index": index, "reason": str(exc)})
    if errors:
        raise InvalidUsageBatch(errors)
    return events


def _text(item: dict[str, Any], key: str, limit: int, required: bool = True) -> str | None:
    value = item.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key}: a non-empty string is required")
    if len(value) > limit:
        raise ValueError(f"{key}: longer than {limit} characters")
    if "\x00" in value:
        raise ValueError(f"{key}: contains a NUL character")
    return value


def _event(item: Any, catalog: Catalog, earliest: datetime, latest: datetime) -> UsageEvent:
    fast = _fast_event(item, catalog, earliest, latest)
    if fast is not None:
        return fast
    if not isinstance(item, dict):
        raise ValueError("an event must be an object")
    event_id = _text(item, "id", 255)
    user_id = _text(item, "user_id", 255)
    metric = _text(item, "metric", 64)
    if metric not in catalog.meters:
        raise ValueError(f"metric: unknown metric {metric!r}")
    value = item.get("value", 1)
    if type(value) is not int or not 0 <= value <= _MAX_VALUE:
        raise ValueError("value: a non-negative integer is required")
    timestamp = parse_timestamp(item.get("timestamp"))
    if timestamp < earliest:
        raise ValueError("timestamp: more than 35 days old")
    if timestamp > latest:
        raise ValueError("timestamp: more than 5 minutes in the future")
    endpoint = _text(item, "endpoint", 512, required=False)
    return UsageEvent(event_id, user_id, metric, value, timestamp, endpoint)  # type: ignore[arg-type]


def _fast_event(
    item: Any, catalog: Catalog, earliest: datetime, latest: datetime
) -> UsageEvent | None:
    """The event when it is plainly valid (the usual case), checked with few calls; None
    sends it through the detailed checks, which name what is wrong."""
    if type(item) is not dict:
        return None
    event_id, user_id, metric = item.get("id"), item.get("user_id"), item.get("metric")
    value, stamp, endpoint = item.get("value", 1), item.get("timestamp"), item.get("endpoint")
    if not (
        type(event_id) is str
        and type(user_id) is str
        and type(metric) is str
        and type(value) is int
        and type(stamp) is str
        and (endpoint is None or (type(endpoint) is str and 0 < len(endpoint) <= 512))
        and 0 < len(event_id) <= 255
        and 0 < len(user_id) <= 255
        and 0 <= value <= _MAX_VALUE
        and metric in catalog.meters
        and "\x00" not in event_id
        and "\x00" not in user_id
        and (endpoint is None or "\x00" not in endpoint)
        and not event_id[0].isspace()
        and not user_id[0].isspace()
        and (endpoint is None or not endpoint[0].isspace())
    ):
        return None
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    moment = moment.astimezone(UTC)
    if not earliest <= moment <= latest:
        return None
    return UsageEvent(event_id, user_id, metric, value, moment, endpoint)


def parse_timestamp(value: Any) -> datetime:
    """An ISO 8601 time with its offset (or `Z`), or Unix seconds, as UTC."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError("timestamp: out of range") from None
    if not isinstance(value, str):
        raise ValueError("timestamp: an ISO 8601 time or Unix seconds is required")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("timestamp: not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise ValueError("timestamp: a UTC offset (or Z) is required")
    return moment.astimezone(UTC)


def ingest(db: Database, catalog: Catalog, events: list[UsageEvent], now: datetime) -> IngestResult:
    """Record a validated batch and the alerts it caused, in one transaction."""
    seen = recorded_alerts(db)
    with WRITE_GATE, db.transaction() as session:
        recorded = record_usage(session, events, now)
        found = seen.unseen(alerts_for(session, catalog, recorded.months, now))
        alerts = record_alerts(session, found, now)
    seen.remember(found)  # committed: skipped by this process's next batches
    return IngestResult(len(events), recorded.new, recorded.duplicates, alerts)


def verify_ingest_key(db: Database, api_key: str) -> None:
    """The presented `api_key` is live and holds the `ingest` scope (one statement on
    PostgreSQL, no ORM); InvalidApiKey or InsufficientScope otherwise."""
    if db.sqlite:
        with db.reading() as session:
            verify_api_key(session, api_key, "ingest")
    else:
        with db.autocommit() as raw:
            api_key_name(raw, api_key, "ingest")


def ingest_document(db: Database, catalog: Catalog, document: bytes, now: datetime) -> IngestResult:
    """`ingest` for the JSON body of the ingestion API: parsed, validated as a whole, stored."""
    try:
        payload = orjson.loads(document)
    except orjson.JSONDecodeError:
        payload = None
    return ingest(db, catalog, parse_events(payload, catalog, now), now)
