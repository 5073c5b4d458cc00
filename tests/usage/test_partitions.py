"""The raw log by month: in-place migration of existing databases, partitions created on
demand, retention that drops raw months but keeps totals, deletion of a user's events."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from typer.testing import CliRunner

from meterbill.cli import app
from meterbill.db import Database
from meterbill.migrate import upgrade
from meterbill.usage.models import ConsumptionEvent, UsageDaily, UsageMonthly
from meterbill.usage.partitions import add_months, month_start, partition_name
from meterbill.usage.recording import UsageEvent, record_usage
from tests.conftest import BACKENDS, _pg_url


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all (to migrate step by step)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    name = f"meterbill_old_{uuid.uuid4().hex[:10]}"
    admin = create_engine(_pg_url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield _pg_url(name)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _old_row(db: Database, n: int, user: str, at: datetime) -> None:
    stamp = at if db.engine.dialect.name == "postgresql" else at.strftime("%Y-%m-%d %H:%M:%S.%f")
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO saas_users (id, plan, created_at, updated_at) "
                "VALUES (:u, 'free', :t, :t) ON CONFLICT (id) DO NOTHING"
            ),
            {"u": user, "t": stamp},
        )
        conn.execute(
            text(
                "INSERT INTO consumption_log (id, event_id, user_id, metric, value, date, "
                "endpoint, received_at) VALUES (:n, :e, :u, 'api_calls', :v, :t, NULL, :t)"
            ),
            {"n": n, "e": f"evt-{n}", "u": user, "v": n, "t": stamp},
        )


def test_upgrade_in_place_keeps_rows_ids_and_idempotency(empty_database: str) -> None:
    db = Database(empty_database)
    upgrade(db.engine, "0008_misc")  # the schema before partitioning
    now = datetime.now(UTC).replace(microsecond=0)
    old = now - timedelta(days=70)  # a month no partition is created ahead for
    moments = {1: now, 2: now - timedelta(days=1), 3: old, 4: old, 5: now}
    for n, at in moments.items():
        _old_row(db, n, "ann" if n % 2 else "bob", at)

    upgrade(db.engine)

    with db.reading() as session:
        rows = session.execute(
            select(ConsumptionEvent.id, ConsumptionEvent.event_id, ConsumptionEvent.month)
        ).all()
    assert sorted((row.id, row.event_id) for row in rows) == [(n, f"evt-{n}") for n in moments]
    assert {row.event_id: row.month for row in rows} == {
        f"evt-{n}": month_start(at) for n, at in moments.items()
    }
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect() as conn:
            kind = conn.execute(
                text("SELECT relkind FROM pg_class WHERE relname = 'consumption_log'")
            ).scalar()
            assert kind == "p"  # partitioned
            where = conn.execute(
                text("SELECT tableoid::regclass::text FROM consumption_log WHERE id = 3")
            ).scalar()
            assert where == partition_name(month_start(old))

    # The stored events are still known: sending them again records nothing.
    again = [
        UsageEvent(f"evt-{n}", "ann" if n % 2 else "bob", "api_calls", n, at)
        for n, at in moments.items()
    ]
    with db.transaction() as session:
        recorded = record_usage(session, again, now)
    assert (recorded.new, recorded.duplicates) == (0, 5)
    # New events get ids after the copied ones.
    with db.transaction() as session:
        record_usage(session, [UsageEvent("evt-6", "ann", "api_calls", 6, now)], now)
    with db.reading() as session:
        assert session.scalar(select(func.max(ConsumptionEvent.id))) == 6
    db.dispose()


def test_retention_drops_old_raw_months_and_keeps_totals(database_url: str) -> None:
    db = Database(database_url)
    now = datetime.now(UTC)
    this_month = month_start(now)
    months_ago = {k: datetime.combine(add_months(this_month, -k), now.timetz()) for k in (5, 3)}
    events = [
        UsageEvent("e-now", "ann", "api_calls", 2, now),
        UsageEvent("e-3", "ann", "api_calls", 30, months_ago[3] + timedelta(days=2)),
        UsageEvent("e-5", "ann", "api_calls", 500, months_ago[5] + timedelta(days=3)),
    ]
    with db.transaction() as session:  # months 3 and 5 back get partitions on demand
        assert record_usage(session, events, now).new == 3
    with db.transaction() as session:  # and idempotency holds in them
        assert record_usage(session, events, now).duplicates == 3

    runner = CliRunner()
    env = {"METERBILL_DATABASE_URL": database_url}
    refused = runner.invoke(app, ["usage", "retention", "--keep-months", "0"], env=env)
    assert refused.exit_code == 1
    assert "35" in refused.output and "Traceback" not in refused.output
    done = runner.invoke(app, ["usage", "retention", "--keep-months", "2"], env=env)
    assert done.exit_code == 0, done.output

    with db.reading() as session:
        assert session.scalars(select(ConsumptionEvent.event_id)).all() == ["e-now"]
        months = dict(
            session.execute(
                select(UsageMonthly.month, UsageMonthly.total).where(UsageMonthly.user_id == "ann")
            ).all()
        )
        daily = session.scalar(
            select(func.sum(UsageDaily.total)).where(UsageDaily.user_id == "ann")
        )
    expected = {this_month: 2, add_months(this_month, -3): 30, add_months(this_month, -5): 500}
    assert months == {f"{m:%Y-%m}": v for m, v in expected.items()}
    assert daily == 532
    if db.engine.dialect.name == "postgresql":
        assert partition_name(add_months(this_month, -3)) in done.output
        with db.engine.connect() as conn:
            left = conn.execute(
                text("SELECT count(*) FROM pg_class WHERE relname IN (:a, :b)"),
                {
                    "a": partition_name(add_months(this_month, -3)),
                    "b": partition_name(add_months(this_month, -5)),
                },
            ).scalar()
        assert left == 0
    else:
        assert "rows deleted: 2" in done.output

    # Rebuilding totals leaves the months before the horizon alone.
    rebuilt = runner.invoke(app, ["usage", "rebuild"], env=env)
    assert "0 drifted" in rebuilt.output, rebuilt.output
    db.dispose()


def test_deleting_a_user_deletes_their_raw_events(database_url: str) -> None:
    db = Database(database_url)
    now = datetime.now(UTC)
    with db.transaction() as session:
        record_usage(
            session,
            [
                UsageEvent("a", "ann", "api_calls", 1, now),
                UsageEvent("b", "bob", "api_calls", 1, now),
            ],
            now,
        )
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM saas_users WHERE id = 'ann'"))
    with db.reading() as session:
        assert session.scalars(select(ConsumptionEvent.user_id)).all() == ["bob"]
    db.dispose()
