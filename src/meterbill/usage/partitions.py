"""The raw event log's monthly partitions (PostgreSQL) and its retention (both databases).

On PostgreSQL `consumption_log` is partitioned by range of `month` (the first day of the
event's UTC month), one partition per month named `consumption_log_pYYYY_MM`. Idempotency
is per partition: the unique key is (user_id, event_id, month), so an event id counts once
per user and month (a resent event carries its original timestamp, hence its month).

Partitions are created ahead of time (every migration run, i.e. every `meterbill serve` and
`meterbill migrate`, and every retention run, covers the ingestion window and two months
ahead) and on demand, in the recording transaction, for a batch whose month has none (the
process remembers which months exist, so a batch costs no catalog query). An on-demand
partition is created standalone then attached: ATTACH takes only a SHARE UPDATE EXCLUSIVE
lock on the parent, which concurrent inserts do not conflict with, and creators take an
advisory lock first so that two of them do not race on the same name.

Retention (`meterbill usage retention --keep-months N`) detaches and drops the raw
partitions of months older than the current month minus N (SQLite: deletes those rows), and
records that horizon (`usage_retention`) so that rebuilding totals leaves the older daily and
monthly totals alone. Rollups, invoices and the audit trail are other tables: they stay.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text

from meterbill.usage.errors import RetentionTooShort

# How old an event may be when it arrives (the ingestion window); retention never drops a
# month that may still receive events.
MAX_AGE = timedelta(days=35)
MONTHS_AHEAD = 2
_CREATE_LOCK = 7_416_823_312  # advisory lock id: one partition creator at a time

_known: dict[str, set[date]] = {}
_known_lock = threading.Lock()


def month_start(moment: datetime | date) -> date:
    if isinstance(moment, datetime):
        moment = moment.astimezone(UTC)
    return date(moment.year, moment.month, 1)


def add_months(month: date, count: int) -> date:
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"consumption_log_p{month.year:04d}_{month.month:02d}"


def window_months(now: datetime) -> list[date]:
    """The months the ingestion window touches now, and MONTHS_AHEAD more."""
    first, last = month_start(now - MAX_AGE), add_months(month_start(now), MONTHS_AHEAD)
    months = [first]
    while months[-1] < last:
        months.append(add_months(months[-1], 1))
    return months


def existing_partitions(cursor: Any) -> dict[date, str]:
    """Attached partitions of consumption_log: their month and name."""
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'consumption_log'::regclass"
    )
    found = {}
    for (name,) in cursor.fetchall():
        year, month = name.removeprefix("consumption_log_p").split("_")
        found[date(int(year), int(month), 1)] = name
    return found


def partitions_known(key: str, months: set[date]) -> bool:
    """Whether this process knows the partitions of these months exist."""
    with _known_lock:
        return months <= _known.get(key, set())


def ensure_partitions(cursor: Any, key: str, months: Iterable[date]) -> None:
    """Make sure consumption_log has a partition for each month, in the cursor's transaction.

    `key` names the database (its URL) for the process's memory of existing months."""
    wanted = set(months)
    with _known_lock:
        known = _known.setdefault(key, set())
        if wanted <= known:
            return
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
    existing = existing_partitions(cursor)
    for month in sorted(wanted - existing.keys()):
        name = partition_name(month)
        cursor.execute(
            f"CREATE TABLE {name} (LIKE consumption_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        cursor.execute(
            f"ALTER TABLE consumption_log ATTACH PARTITION {name} "
            f"FOR VALUES FROM ('{month.isoformat()}') TO ('{add_months(month, 1).isoformat()}')"
        )
    with _known_lock:
        _known[key] = set(existing) | wanted


def forget_partitions(key: str) -> None:
    with _known_lock:
        _known.pop(key, None)


def create_partitions_ahead(engine: Engine, now: datetime) -> None:
    """Partitions for the ingestion window and the months ahead (PostgreSQL; no-op on SQLite)."""
    if engine.dialect.name != "postgresql":
        return
    with engine.begin() as conn:
        raw: Any = conn.connection.driver_connection
        with raw.cursor() as cursor:
            ensure_partitions(cursor, engine.url.render_as_string(), window_months(now))


@dataclass(frozen=True)
class RetentionResult:
    horizon: date  # raw events before this day are gone
    partitions: list[str]  # partitions dropped (PostgreSQL)
    deleted: int  # rows deleted (SQLite)


def apply_retention(engine: Engine, keep_months: int, now: datetime) -> RetentionResult:
    """Drop the raw events of months before the current month minus `keep_months`.

    Raises RetentionTooShort when that would drop a month still inside the ingestion window
    (events may still arrive for it, and idempotency needs the stored ids)."""
    horizon = add_months(month_start(now), -keep_months)
    if horizon > month_start(now - MAX_AGE):
        raise RetentionTooShort(keep_months)
    dropped: list[str] = []
    deleted = 0
    if engine.dialect.name == "postgresql":
        create_partitions_ahead(engine, now)
        key = engine.url.render_as_string()
        with engine.begin() as conn:
            _record_horizon(conn, horizon)
            raw: Any = conn.connection.driver_connection
            with raw.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
                old = sorted(m for m in existing_partitions(cursor) if m < horizon)
        for month in old:
            name = partition_name(month)
            # Detached in a transaction of its own, then dropped: inserts elsewhere never
            # wait behind a long exclusive lock on the parent.
            with engine.begin() as conn:
                conn.execute(text(f"ALTER TABLE consumption_log DETACH PARTITION {name}"))
            with engine.begin() as conn:
                conn.execute(text(f"DROP TABLE {name}"))
            dropped.append(name)
        forget_partitions(key)
    else:
        with engine.begin() as conn:
            _record_horizon(conn, horizon)
            deleted = conn.execute(
                text("DELETE FROM consumption_log WHERE month < :h"), {"h": horizon}
            ).rowcount
    return RetentionResult(horizon, dropped, deleted)


def _record_horizon(conn: Connection, horizon: date) -> None:
    conn.execute(
        text(
            "INSERT INTO usage_retention (id, raw_since) VALUES (1, :h) ON CONFLICT (id) "
            "DO UPDATE SET raw_since = greatest(usage_retention.raw_since, excluded.raw_since)"
            if conn.dialect.name == "postgresql"
            else "INSERT INTO usage_retention (id, raw_since) VALUES (1, :h) ON CONFLICT (id) "
            "DO UPDATE SET raw_since = max(usage_retention.raw_since, excluded.raw_since)"
        ),
        {"h": horizon},
    )


def raw_horizon(conn: Connection) -> date | None:
    """The first day whose raw events are all kept (None: nothing was ever dropped)."""
    value = conn.execute(text("SELECT raw_since FROM usage_retention WHERE id = 1")).scalar()
    if value is None:
        return None
    return value if isinstance(value, date) else date.fromisoformat(str(value))
