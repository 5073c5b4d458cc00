"""Recording usage events in bulk: raw rows for audit, daily and monthly totals for reads.

All of it happens in the caller's transaction, so totals never disagree with the raw
events. On PostgreSQL a batch is COPied into a temporary table (a small one is sent as one
array per column instead), and one statement creates the users it needs, inserts the
events not stored yet (`ON CONFLICT DO NOTHING RETURNING`), folds exactly those into the
daily and monthly totals, and returns the monthly totals as they now stand (alerts are
decided from them). Rows are written in key order (event id, then user/metric/period) so
that concurrent batches take their locks in the same order and never deadlock. On SQLite,
which has one writer at a time, the same work is a few `executemany` calls.

An event id is unique per user and UTC month: (user_id, event_id, month) is the
idempotency key (the raw log's partition key on PostgreSQL). Totals are exact integers up
to BIGINT (2^63 - 1) on both databases: a batch that would take a daily or monthly total
past it raises UsageTotalOverflow and writes nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

import psycopg.errors
from sqlalchemy.orm import Session

from meterbill.billing.subscriptions import plan_of_user_sql
from meterbill.usage.errors import UsageTotalOverflow
from meterbill.usage.partitions import ensure_partitions

_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores DateTime on SQLite
BIGINT_MAX = 2**63 - 1  # the largest value or total either database keeps exactly

# Batches from one process are written one at a time: concurrent batches lock the same
# rollup rows (every user's total for today), and past one writer per core they spend more
# time waiting on each other than writing (bench/ingest.py: 8 concurrent writers on 2 cores
# gave a third of the throughput of 2). Run one API process per core. On SQLite every write
# takes this gate: threads queue on it instead of in SQLite's sleeping busy handler, whose
# back-off put 100+ ms on the slowest consumes.
WRITE_GATE = threading.Lock()


@dataclass(frozen=True, slots=True)
class UsageEvent:
    id: str
    user_id: str
    metric: str
    value: int
    timestamp: datetime
    endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class MonthChange:
    """A monthly total as the batch left it, and what the batch added to it."""

    user_id: str
    metric: str
    month: str  # YYYY-MM
    total: int
    events: int
    peak: int
    added_total: int
    added_events: int
    added_peak: int
    # The user's effective plan now, when the recording statement resolved it (PostgreSQL).
    plan: str | None = None


@dataclass
class Recorded:
    """What a batch changed: how many events were new, and the monthly totals it moved."""

    new: int = 0
    duplicates: int = 0
    months: list[MonthChange] = field(default_factory=list)


def record_usage(
    session: Session, events: Sequence[UsageEvent], now: datetime, *, users_exist: bool = False
) -> Recorded:
    """Store the events not seen before and add them to the daily and monthly totals, in the
    session's transaction. An id already stored, or repeated in the batch, counts once.
    Unknown users are created, unless the caller says they all exist (`users_exist`).
    Raises UsageTotalOverflow, having written nothing, when a total would pass BIGINT."""
    # An event counts once per user, id and UTC month (the raw log's unique key).
    unique: dict[tuple[str, str, int, int], UsageEvent] = {}
    for event in events:
        if event.timestamp.utcoffset():
            event = replace(event, timestamp=event.timestamp.astimezone(UTC))
        key = (event.user_id, event.id, event.timestamp.year, event.timestamp.month)
        unique.setdefault(key, event)
    batch = [unique[key] for key in sorted(unique)]
    if not batch:
        return Recorded()
    if session.get_bind().dialect.name == "postgresql":
        try:
            new, months = _record_postgresql(session, batch, now, users_exist)
        except psycopg.errors.NumericValueOutOfRange:
            raise UsageTotalOverflow() from None
    else:
        new, months = _record_sqlite(session, batch, now, users_exist)
    return Recorded(new=new, duplicates=len(events) - new, months=months)


def month_of(moment: datetime | date) -> str:
    """`YYYY-MM` of a day, or of a moment in UTC."""
    if isinstance(moment, datetime):
        moment = moment.astimezone(UTC)
    return f"{moment.year:04d}-{moment.month:02d}"


# The users a batch needs are created by the recording statement itself (there is no
# per-row foreign key check on consumption_log: see migration 0011_partitions).
_PG_USERS = """
users AS (
    INSERT INTO saas_users (id, plan, created_at, updated_at)
    SELECT DISTINCT user_id, 'free', %(now)s::timestamptz, %(now)s::timestamptz
    FROM incoming ORDER BY 1
    ON CONFLICT (id) DO NOTHING
),"""
# A small batch (consume, the middleware) travels as six arrays, one per column: one round
# trip. A larger one is COPied into a temporary table: psycopg writes COPY rows in C, while
# it builds text arrays in Python (1,000 events: 15 ms against 55 ms on this machine).
_ARRAYS_MAX = 50
_PG_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS usage_incoming (
    event_id text, user_id text, metric text, value bigint, ts timestamptz, endpoint text
) ON COMMIT DELETE ROWS
"""
_STAGED = "usage_incoming"
_PG_SOURCE = """unnest(%(ids)s::text[], %(users)s::text[], %(metrics)s::text[],
            %(values)s::bigint[], %(times)s::timestamptz[], %(endpoints)s::text[])
    AS usage_incoming (event_id, user_id, metric, value, ts, endpoint)"""
_PG_RECORD = """
WITH incoming AS (SELECT * FROM {source}), {users}
inserted AS (
    INSERT INTO consumption_log
        (event_id, user_id, metric, value, date, month, endpoint, received_at)
    SELECT event_id, user_id, metric, value, ts,
           date_trunc('month', ts AT TIME ZONE 'UTC')::date, endpoint, %(now)s::timestamptz
    FROM incoming ORDER BY user_id, event_id
    ON CONFLICT (user_id, event_id, month) DO NOTHING
    RETURNING user_id, metric, date, value
), days AS (
    INSERT INTO usage_daily AS d (user_id, metric, day, total, events, peak)
    SELECT user_id, metric, (date AT TIME ZONE 'UTC')::date, sum(value), count(*), max(value)
    FROM inserted GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (user_id, metric, day) DO UPDATE SET
        total = d.total + excluded.total,
        events = d.events + excluded.events,
        peak = greatest(d.peak, excluded.peak)
), added AS (
    SELECT user_id, metric, to_char(date AT TIME ZONE 'UTC', 'YYYY-MM') AS month,
           sum(value) AS total, count(*) AS events, max(value) AS peak
    FROM inserted GROUP BY 1, 2, 3
), months AS (
    INSERT INTO usage_monthly AS m (user_id, metric, month, total, events, peak)
    SELECT user_id, metric, month, total, events, peak FROM added ORDER BY 1, 2, 3
    ON CONFLICT (user_id, metric, month) DO UPDATE SET
        total = m.total + excluded.total,
        events = m.events + excluded.events,
        peak = greatest(m.peak, excluded.peak)
    RETURNING user_id, metric, month, total, events, peak
)
SELECT (SELECT count(*) FROM inserted), months.user_id, months.metric, months.month,
       months.total, months.events, months.peak, added.total, added.events, added.peak,
       coalesce(({plan}), 'free')
FROM months JOIN added USING (user_id, metric, month)
"""
# Each moved month's user's plan in effect, for the alerts (one index read per row, no
# round trip: `alerts_for` needs no query).
_PG_PLAN = plan_of_user_sql("months.user_id", "%(now)s::timestamptz")


def _record_postgresql(
    session: Session, batch: list[UsageEvent], now: datetime, users_exist: bool
) -> tuple[int, list[MonthChange]]:
    connection = session.connection()
    raw: Any = connection.connection.driver_connection
    months = {date(e.timestamp.year, e.timestamp.month, 1) for e in batch}  # UTC already
    users = "" if users_exist else _PG_USERS
    with raw.cursor() as cursor:
        ensure_partitions(cursor, connection.engine.url.render_as_string(), months)
        if len(batch) <= _ARRAYS_MAX:  # one round trip
            params: dict[str, Any] = {
                "now": now,
                "ids": [e.id for e in batch],
                "users": [e.user_id for e in batch],
                "metrics": [e.metric for e in batch],
                "values": [e.value for e in batch],
                "times": [e.timestamp for e in batch],
                "endpoints": [e.endpoint for e in batch],
            }
            cursor.execute(_PG_RECORD.format(source=_PG_SOURCE, users=users, plan=_PG_PLAN), params)
            changes = cursor.fetchall()
        else:
            cursor.execute(_PG_STAGE)
            columns = "event_id, user_id, metric, value, ts, endpoint"
            with cursor.copy(f"COPY usage_incoming ({columns}) FROM STDIN") as copy:
                for e in batch:
                    copy.write_row((e.id, e.user_id, e.metric, e.value, e.timestamp, e.endpoint))
            statement = _PG_RECORD.format(source=_STAGED, users=users, plan=_PG_PLAN)
            cursor.execute(statement, {"now": now})
            changes = cursor.fetchall()
            cursor.execute("DELETE FROM usage_incoming")  # the transaction may record again
    new = int(changes[0][0]) if changes else 0
    return new, [
        MonthChange(user, metric, month, int(t), int(e), int(p), int(at), int(ae), int(ap), plan)
        for _, user, metric, month, t, e, p, at, ae, ap, plan in changes
    ]


def _record_sqlite(
    session: Session, batch: list[UsageEvent], now: datetime, users_exist: bool
) -> tuple[int, list[MonthChange]]:
    raw: Any = session.connection().connection.driver_connection
    stamp = now.astimezone(UTC).strftime(_SQLITE_TIME)
    users = [] if users_exist else sorted({e.user_id for e in batch})
    raw.executemany(
        "INSERT INTO saas_users (id, plan, created_at, updated_at) VALUES (?, 'free', ?, ?) "
        "ON CONFLICT (id) DO NOTHING",
        [(user, stamp, stamp) for user in users],
    )
    fresh = [e for e in batch if not _stored(raw, e)]
    raw.executemany(
        "INSERT INTO consumption_log (event_id, user_id, metric, value, date, month, endpoint, "
        "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                e.id,
                e.user_id,
                e.metric,
                e.value,
                e.timestamp.strftime(_SQLITE_TIME),
                _sqlite_month(e),
                e.endpoint,
                stamp,
            )
            for e in fresh
        ],
    )
    days: dict[tuple[str, str, str], list[int]] = {}
    months: dict[tuple[str, str, str], list[int]] = {}
    for e in fresh:
        day = e.timestamp.astimezone(UTC).date().isoformat()
        for totals, key in (
            (days, (e.user_id, e.metric, day)),
            (months, (e.user_id, e.metric, day[:7])),
        ):
            row = totals.setdefault(key, [0, 0, e.value])
            row[0] += e.value
            row[1] += 1
            row[2] = max(row[2], e.value)
    if any(row[0] > BIGINT_MAX for row in months.values()):  # a day is part of its month
        raise UsageTotalOverflow()
    for table, column, totals in (("usage_daily", "day", days), ("usage_monthly", "month", months)):
        raw.executemany(
            f"INSERT INTO {table} (user_id, metric, {column}, total, events, peak) "  # noqa: S608
            f"VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, metric, {column}) DO UPDATE SET "
            "total = total + excluded.total, events = events + excluded.events, "
            "peak = max(peak, excluded.peak)",
            [(*key, *values) for key, values in sorted(totals.items())],
        )
    changes = []
    for user, metric, month, total, events, peak in _monthly_rows(raw, sorted(months)):
        added_total, added_events, added_peak = months[(user, metric, month)]
        changes.append(
            MonthChange(
                user, metric, month, total, events, peak, added_total, added_events, added_peak
            )
        )
    # SQLite turns an integer sum that overflows into a float: such a total passed BIGINT.
    # Its days are part of it, so they passed it only if it did.
    if any(type(change.total) is not int for change in changes):
        raise UsageTotalOverflow()
    return len(fresh), changes


def _monthly_rows(raw: Any, keys: list[tuple[str, str, str]]) -> Iterable[tuple[Any, ...]]:
    for start in range(0, len(keys), 300):
        chunk = keys[start : start + 300]
        rows = ",".join(["(?, ?, ?)"] * len(chunk))
        yield from raw.execute(
            "SELECT user_id, metric, month, total, events, peak FROM usage_monthly "  # noqa: S608
            f"WHERE (user_id, metric, month) IN (VALUES {rows})",
            [value for key in chunk for value in key],
        )


def _sqlite_month(event: UsageEvent) -> str:
    return f"{event.timestamp.year:04d}-{event.timestamp.month:02d}-01"


def _stored(raw: Any, event: UsageEvent) -> bool:
    found = raw.execute(
        "SELECT 1 FROM consumption_log WHERE user_id = ? AND event_id = ? AND month = ?",
        (event.user_id, event.id, _sqlite_month(event)),
    ).fetchone()
    return found is not None
