"""Recording usage events in bulk: raw rows for audit, per-day totals for reads.

Both happen in the caller's transaction, so totals never disagree with the raw events.
On PostgreSQL a batch is COPied into a temporary table, then one statement inserts the
events whose id is new (`ON CONFLICT DO NOTHING RETURNING`) and folds exactly those into
the daily totals. Rows are written in key order (event id, then user/metric/day) so that
concurrent batches take their locks in the same order and never deadlock. On SQLite, which
has one writer at a time, the same work is a few `executemany` calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy.orm import Session

_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores DateTime on SQLite


@dataclass(frozen=True, slots=True)
class UsageEvent:
    id: str
    user_id: str
    metric: str
    value: int
    timestamp: datetime
    endpoint: str | None = None


@dataclass
class Recorded:
    """What a batch changed: how many events were new, and the (user, metric, month)
    totals it may have moved (the ones to check against limits)."""

    new: int = 0
    duplicates: int = 0
    touched: set[tuple[str, str, str]] = field(default_factory=set)


def record_usage(session: Session, events: Sequence[UsageEvent], now: datetime) -> Recorded:
    """Store the events not seen before and add them to the daily totals, in the session's
    transaction. An id already stored, or repeated in the batch, counts once."""
    unique: dict[str, UsageEvent] = {}
    for event in events:
        unique.setdefault(event.id, event)
    batch = sorted(unique.values(), key=lambda e: e.id)
    if not batch:
        return Recorded()
    if session.get_bind().dialect.name == "postgresql":
        new, touched = _record_postgresql(session, batch, now)
    else:
        new, touched = _record_sqlite(session, batch, now)
    return Recorded(new=new, duplicates=len(events) - new, touched=touched)


def month_of(moment: datetime | date) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


_PG_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS usage_incoming (
    event_id text, user_id text, metric text, value bigint, ts timestamptz, endpoint text
) ON COMMIT DELETE ROWS
"""
_PG_USERS = """
INSERT INTO saas_users (id, plan, created_at, updated_at)
SELECT DISTINCT user_id, 'free', %(now)s::timestamptz, %(now)s::timestamptz
FROM usage_incoming ORDER BY 1
ON CONFLICT (id) DO NOTHING
"""
_PG_RECORD = """
WITH inserted AS (
    INSERT INTO consumption_log (event_id, user_id, metric, value, date, endpoint, received_at)
    SELECT event_id, user_id, metric, value, ts, endpoint, %(now)s::timestamptz
    FROM usage_incoming ORDER BY event_id
    ON CONFLICT (event_id) DO NOTHING
    RETURNING user_id, metric, date, value
), rolled AS (
    INSERT INTO usage_daily AS d (user_id, metric, day, total, events, peak)
    SELECT user_id, metric, (date AT TIME ZONE 'UTC')::date, sum(value), count(*), max(value)
    FROM inserted GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (user_id, metric, day) DO UPDATE SET
        total = d.total + excluded.total,
        events = d.events + excluded.events,
        peak = greatest(d.peak, excluded.peak)
    RETURNING user_id, metric, day
)
SELECT (SELECT count(*) FROM inserted), user_id, metric, day FROM rolled
"""


def _record_postgresql(
    session: Session, batch: list[UsageEvent], now: datetime
) -> tuple[int, set[tuple[str, str, str]]]:
    raw: Any = session.connection().connection.driver_connection
    with raw.cursor() as cursor:
        cursor.execute(_PG_STAGE)
        columns = "event_id, user_id, metric, value, ts, endpoint"
        with cursor.copy(f"COPY usage_incoming ({columns}) FROM STDIN") as copy:
            for e in batch:
                copy.write_row((e.id, e.user_id, e.metric, e.value, e.timestamp, e.endpoint))
        cursor.execute(_PG_USERS, {"now": now})
        cursor.execute(_PG_RECORD, {"now": now})
        rows = cursor.fetchall()
        cursor.execute("DELETE FROM usage_incoming")  # in case the transaction records again
    new = int(rows[0][0]) if rows else 0
    return new, {(user, metric, month_of(day)) for _, user, metric, day in rows}


def _record_sqlite(
    session: Session, batch: list[UsageEvent], now: datetime
) -> tuple[int, set[tuple[str, str, str]]]:
    raw: Any = session.connection().connection.driver_connection
    stamp = now.astimezone(UTC).strftime(_SQLITE_TIME)
    users = sorted({e.user_id for e in batch})
    raw.executemany(
        "INSERT INTO saas_users (id, plan, created_at, updated_at) VALUES (?, 'free', ?, ?) "
        "ON CONFLICT (id) DO NOTHING",
        [(user, stamp, stamp) for user in users],
    )
    seen = set(_stored_ids(raw, [e.id for e in batch]))
    fresh = [e for e in batch if e.id not in seen]
    raw.executemany(
        "INSERT INTO consumption_log (event_id, user_id, metric, value, date, endpoint, "
        "received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                e.id,
                e.user_id,
                e.metric,
                e.value,
                e.timestamp.astimezone(UTC).strftime(_SQLITE_TIME),
                e.endpoint,
                stamp,
            )
            for e in fresh
        ],
    )
    totals: dict[tuple[str, str, date], list[int]] = {}
    for e in fresh:
        key = (e.user_id, e.metric, e.timestamp.astimezone(UTC).date())
        row = totals.setdefault(key, [0, 0, e.value])
        row[0] += e.value
        row[1] += 1
        row[2] = max(row[2], e.value)
    raw.executemany(
        "INSERT INTO usage_daily (user_id, metric, day, total, events, peak) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, metric, day) DO UPDATE SET "
        "total = total + excluded.total, events = events + excluded.events, "
        "peak = max(peak, excluded.peak)",
        [(u, m, d.isoformat(), *values) for (u, m, d), values in sorted(totals.items())],
    )
    return len(fresh), {(u, m, month_of(d)) for u, m, d in totals}


def _stored_ids(raw: Any, ids: list[str]) -> Iterable[str]:
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT event_id FROM consumption_log WHERE event_id IN ({marks})"  # noqa: S608
        for (event_id,) in raw.execute(sql, chunk):
            yield event_id
