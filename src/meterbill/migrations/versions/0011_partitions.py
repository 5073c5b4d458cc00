"""raw usage log partitioned by month (PostgreSQL), idempotency per user and month, no
per-row foreign key, retention horizon

The existing table is renamed, the new one created (on PostgreSQL: partitioned by range of
`month`, one partition per month from the oldest stored event to two months ahead), the rows
copied with their ids, and the old table dropped: existing databases keep every event and
the idempotency of every stored id.

Revision ID: 0011_partitions
Revises: 0010_console
"""

from collections.abc import Sequence
from datetime import UTC, date, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0011_partitions"
down_revision: str | None = "0010_console"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PG_COPY = """
INSERT INTO consumption_log (id, event_id, user_id, metric, value, date, endpoint, received_at,
                             month)
SELECT id, event_id, user_id, metric, value, date, endpoint, received_at,
       date_trunc('month', date AT TIME ZONE 'UTC')::date
FROM consumption_log_unpartitioned ON CONFLICT DO NOTHING
"""
_SQLITE_COPY = """
INSERT OR IGNORE INTO consumption_log
    (id, event_id, user_id, metric, value, date, endpoint, received_at, month)
SELECT id, event_id, user_id, metric, value, date, endpoint, received_at,
       substr(date, 1, 7) || '-01'
FROM consumption_log_unpartitioned
"""

# A user's deletion deletes their raw events (what the foreign key's ON DELETE CASCADE did).
# The statement-level trigger first takes a SHARE lock on the log, so that it waits for
# batches being written and new batches wait for it: a batch's statement re-creates the
# users it needs (INSERT … ON CONFLICT DO NOTHING), so no event is left without its user.
_PG_TRIGGERS = """
CREATE FUNCTION consumption_log_lock_for_user_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE consumption_log IN SHARE MODE;
    RETURN NULL;
END $$;
CREATE FUNCTION consumption_log_delete_user_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM consumption_log WHERE user_id = OLD.id;
    RETURN NULL;
END $$;
CREATE TRIGGER saas_users_delete_lock_log BEFORE DELETE ON saas_users
    FOR EACH STATEMENT EXECUTE FUNCTION consumption_log_lock_for_user_delete();
CREATE TRIGGER saas_users_delete_events AFTER DELETE ON saas_users
    FOR EACH ROW EXECUTE FUNCTION consumption_log_delete_user_events();
"""
_SQLITE_TRIGGER = """
CREATE TRIGGER saas_users_delete_events AFTER DELETE ON saas_users FOR EACH ROW
BEGIN
    DELETE FROM consumption_log WHERE user_id = OLD.id;
END
"""


def _months(first: date, last: date) -> list[date]:
    months = [date(first.year, first.month, 1)]
    while months[-1] < last:
        months.append(_next(months[-1]))
    return months


def _next(month: date) -> date:
    index = month.year * 12 + month.month  # the next month, 0-based
    return date(index // 12, index % 12 + 1, 1)


def upgrade() -> None:
    op.create_table(
        "usage_retention",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("raw_since", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_retention")),
    )
    if op.get_bind().dialect.name == "postgresql":
        _upgrade_postgresql()
    else:
        _upgrade_sqlite()


def _upgrade_postgresql() -> None:
    bind = op.get_bind()
    op.execute("ALTER TABLE consumption_log RENAME TO consumption_log_unpartitioned")
    op.execute("ALTER SEQUENCE consumption_log_id_seq OWNED BY NONE")
    for constraint in bind.execute(
        sa.text(
            "SELECT conname FROM pg_constraint "
            "WHERE conrelid = 'consumption_log_unpartitioned'::regclass"
        )
    ).scalars():
        op.execute(f"ALTER TABLE consumption_log_unpartitioned DROP CONSTRAINT {constraint}")
    op.execute(
        """
        CREATE TABLE consumption_log (
            id bigint NOT NULL DEFAULT nextval('consumption_log_id_seq'),
            event_id varchar(255) NOT NULL,
            user_id varchar(255) NOT NULL,
            metric varchar(64) NOT NULL,
            value bigint NOT NULL,
            date timestamptz NOT NULL,
            month date NOT NULL,
            endpoint varchar(512),
            received_at timestamptz NOT NULL,
            CONSTRAINT pk_consumption_log PRIMARY KEY (id, month),
            CONSTRAINT uq_consumption_log_event UNIQUE (user_id, event_id, month)
        ) PARTITION BY RANGE (month)
        """
    )
    op.execute("ALTER SEQUENCE consumption_log_id_seq OWNED BY consumption_log.id")
    oldest = bind.execute(
        sa.text("SELECT min(date AT TIME ZONE 'UTC')::date FROM consumption_log_unpartitioned")
    ).scalar()
    newest = bind.execute(
        sa.text("SELECT max(date AT TIME ZONE 'UTC')::date FROM consumption_log_unpartitioned")
    ).scalar()
    today = datetime.now(UTC).date()
    ahead = _next(_next(date(today.year, today.month, 1)))
    first = min(oldest or today, date.fromordinal(today.toordinal() - 35))
    for month in _months(first, max(newest or ahead, ahead)):
        name = f"consumption_log_p{month.year:04d}_{month.month:02d}"
        op.execute(
            f"CREATE TABLE {name} PARTITION OF consumption_log "
            f"FOR VALUES FROM ('{month.isoformat()}') TO ('{_next(month).isoformat()}')"
        )
    op.execute(_PG_COPY)
    op.execute("DROP TABLE consumption_log_unpartitioned")
    op.execute(_PG_TRIGGERS)


def _upgrade_sqlite() -> None:
    op.execute("ALTER TABLE consumption_log RENAME TO consumption_log_unpartitioned")
    op.create_table(
        "consumption_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("date", sa.DateTime(timezone=True), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("endpoint", sa.String(length=512), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_consumption_log"),
        sa.UniqueConstraint("user_id", "event_id", "month", name="uq_consumption_log_event"),
    )
    op.execute(_SQLITE_COPY)
    op.execute("DROP TABLE consumption_log_unpartitioned")
    op.execute(_SQLITE_TRIGGER)


def downgrade() -> None:
    raise NotImplementedError("0011_partitions cannot be undone: restore a backup instead")
