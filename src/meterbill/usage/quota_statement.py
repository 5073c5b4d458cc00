"""`consume` on PostgreSQL as one statement: one round trip checks and records an event.

The statement resolves the user's effective plan from `saas_subscriptions` (the rule of
`billing.subscriptions.effective_plan`, written in SQL: a test holds the two together),
takes that plan's limit from the catalog (passed in as a VALUES list), creates the user if
needed, and adds the event to its month's total only if the total stays within a blocking
limit — `INSERT … ON CONFLICT DO UPDATE … WHERE`, which PostgreSQL evaluates on the newest
version of the row under its lock, so concurrent consumers of one user never overshoot.
Only when the monthly row moved are the event (its id unique per user) and the daily total
written. It runs outside any explicit transaction: a single statement is atomic.

It answers the plan, whether the id was already recorded, the month's figures (after the
event, or as they stand when refused) and whether an alert of the plan is due (the figure
is at or past a threshold whose alert for this limit is not recorded yet). Alerts, rare,
are then recorded with their notifications in a transaction of their own; if that is
lost, the next event finds them still due.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import psycopg.errors

from meterbill.billing.subscriptions import plan_of_user_sql
from meterbill.config import Catalog, Plan
from meterbill.usage.errors import UsageTotalOverflow
from meterbill.usage.partitions import ensure_partitions, month_start, partitions_known
from meterbill.usage.recording import UsageEvent, month_of

# The user's effective plan now (the rule of `effective_plan` in SQL; see
# `plan_of_user_sql`), for the user of the statement's parameters.
PLAN_OF_USER = plan_of_user_sql("%(u)s", "%(now)s")

# The month's figure a consumption is checked against, as the meter aggregates it:
# (figure of a new monthly row, figure of an existing row `t` plus the event `excluded`).
_FIGURES = {
    "sum": ("%(v)s", "t.total + excluded.total"),
    "count": ("1", "t.events + 1"),
    "max": ("%(v)s", "greatest(t.peak, excluded.peak)"),
}
_COLUMN = {"sum": "total", "count": "events", "max": "peak"}


@cache
def _statement(aggregation: str, plans: int) -> str:
    fresh, updated = _FIGURES[aggregation]
    column = _COLUMN[aggregation]
    limits = ", ".join(
        f"(%(p{i})s::text, %(l{i})s::bigint, %(b{i})s::boolean, %(r{i})s::float8)"
        for i in range(plans)
    )
    due = """CASE WHEN r.lim > 0 AND f.figure >= {threshold} THEN NOT EXISTS (
            SELECT 1 FROM usage_alerts a WHERE a.user_id = %(u)s AND a.metric = %(m)s
            AND a.month = %(month)s AND a.level = '{level}' AND a."limit" = r.lim) END"""
    # Only fixed SQL and placeholders are formatted in, never a value.
    return f"""
WITH sub AS ({PLAN_OF_USER}), limits (plan, lim, block, ratio) AS (VALUES {limits}
), rule AS (
    SELECT l.plan, l.lim, l.block, l.ratio FROM limits l
    WHERE l.plan = coalesce((SELECT k.plan FROM sub JOIN limits k ON k.plan = sub.name), 'free')
), who AS (
    INSERT INTO saas_users (id, plan, created_at, updated_at)
    VALUES (%(u)s, 'free', %(now)s, %(now)s) ON CONFLICT (id) DO NOTHING
), dup AS (
    SELECT 1 FROM consumption_log
    WHERE user_id = %(u)s AND event_id = %(id)s AND month = %(partition)s
), cur AS (
    SELECT total, events, peak FROM usage_monthly
    WHERE user_id = %(u)s AND metric = %(m)s AND month = %(month)s
), mon AS (
    INSERT INTO usage_monthly AS t (user_id, metric, month, total, events, peak)
    SELECT %(u)s, %(m)s, %(month)s, %(v)s, 1, %(v)s FROM rule r
    WHERE NOT EXISTS (SELECT 1 FROM dup) AND (r.lim IS NULL OR NOT r.block OR {fresh} <= r.lim)
    ON CONFLICT (user_id, metric, month) DO UPDATE SET
        total = t.total + excluded.total,
        events = t.events + 1,
        peak = greatest(t.peak, excluded.peak)
    WHERE (SELECT r.lim IS NULL OR NOT r.block OR {updated} <= r.lim FROM rule r)
    RETURNING t.total, t.events, t.peak
), ev AS (
    INSERT INTO consumption_log
        (event_id, user_id, metric, value, date, month, endpoint, received_at)
    SELECT %(id)s, %(u)s, %(m)s, %(v)s, %(ts)s, %(partition)s, %(ep)s, %(now)s FROM mon
), day AS (
    INSERT INTO usage_daily AS d (user_id, metric, day, total, events, peak)
    SELECT %(u)s, %(m)s, %(day)s, %(v)s, 1, %(v)s FROM mon
    ON CONFLICT (user_id, metric, day) DO UPDATE SET
        total = d.total + excluded.total,
        events = d.events + 1,
        peak = greatest(d.peak, excluded.peak)
), f AS (
    SELECT coalesce((SELECT {column} FROM mon), (SELECT {column} FROM cur), 0) AS figure,
           EXISTS (SELECT 1 FROM mon) AS recorded
)
SELECT r.plan, EXISTS (SELECT 1 FROM dup), f.recorded, f.figure,
       {due.format(threshold="r.lim * r.ratio", level="soft")},
       {due.format(threshold="r.lim", level="hard")}
FROM rule r, f
"""  # noqa: S608


@dataclass(frozen=True)
class Decision:
    """What the consume statement did and found."""

    plan: Plan
    duplicate: bool
    recorded: bool  # the event was counted (not a duplicate, within the limit)
    figure: int  # the month's figure after the event, or as it stands when not recorded
    alert_due: bool  # a threshold is reached whose alert for this limit is not recorded


def _parameters(catalog: Catalog, event: UsageEvent, now: datetime) -> dict[str, Any]:
    moment = event.timestamp.astimezone(UTC)
    params: dict[str, Any] = {
        "u": event.user_id,
        "m": event.metric,
        "id": event.id,
        "v": event.value,
        "ts": moment,
        "ep": event.endpoint,
        "now": now,
        "month": month_of(moment),
        "partition": month_start(moment),  # the raw log's partition (and unique key) month
        "day": moment.date(),
    }
    for i, plan in enumerate(catalog.plans.values()):
        params |= {
            f"p{i}": plan.name,
            f"l{i}": plan.limits.get(event.metric),
            f"b{i}": plan.on_limit == "block",
            f"r{i}": plan.alert_ratio,
        }
    return params


def decide_and_record(raw: Any, catalog: Catalog, event: UsageEvent, now: datetime) -> Decision:
    """Run the consume statement on `raw`, a psycopg connection in autocommit mode.

    Raises UsageTotalOverflow when the total would pass BIGINT. A concurrent consume with
    the same id that commits first makes the statement fail on the unique key; it is then
    run again, and answers a duplicate. The statement locks the monthly row, then the
    daily one, as ingestion's does."""
    aggregation = catalog.meters[event.metric].aggregation
    sql = _statement(aggregation, len(catalog.plans))
    params = _parameters(catalog, event, now)
    key = f"{raw.info.host}:{raw.info.port}/{raw.info.dbname}"
    if not partitions_known(key, {params["partition"]}):
        with raw.transaction(), raw.cursor() as cursor:
            ensure_partitions(cursor, key, {params["partition"]})
    for attempt in (1, 2):
        try:
            row = raw.execute(sql, params).fetchone()
            break
        except psycopg.errors.NumericValueOutOfRange:
            raise UsageTotalOverflow() from None
        except (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected):
            # The id was recorded by a concurrent consume (or batch) that committed first,
            # or such a batch and this statement waited on each other: once more.
            if attempt == 2:
                raise
    plan, duplicate, recorded, figure, soft_due, hard_due = row
    due = bool(soft_due or hard_due)
    return Decision(catalog.plan(plan), duplicate, recorded, int(figure), due)


_READ_MONTH = f"""
SELECT coalesce(({PLAN_OF_USER}), 'free'), u.id IS NOT NULL, u.email, u.locale,
       m.metric, m.total, m.events, m.peak
FROM (SELECT 1) AS one
LEFT JOIN saas_users u ON u.id = %(u)s
LEFT JOIN usage_monthly m ON m.user_id = %(u)s AND m.month = %(month)s
"""  # noqa: S608


@dataclass(frozen=True)
class MonthRead:
    """A user's effective plan and monthly totals, and the stored user (for token checks)."""

    plan: Plan
    totals: dict[str, tuple[int, int, int]]  # metric -> (total, events, peak)
    user_exists: bool
    email: str | None
    locale: str | None


def read_month(raw: Any, catalog: Catalog, user_id: str, month: str, now: datetime) -> MonthRead:
    """The user's effective plan now and their totals for `month`, in one statement on
    `raw` (a psycopg connection in autocommit mode)."""
    rows = raw.execute(_READ_MONTH, {"u": user_id, "month": month, "now": now}).fetchall()
    plan, exists, email, locale = rows[0][:4]
    totals = {row[4]: (int(row[5]), int(row[6]), int(row[7])) for row in rows if row[4] is not None}
    return MonthRead(catalog.plan(plan), totals, bool(exists), email, locale)
