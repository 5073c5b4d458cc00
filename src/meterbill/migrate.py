"""Alembic, driven from code: `meterbill migrate` and every `serve` start apply migrations
(and, on PostgreSQL, create the raw log's partitions for the coming months)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, inspect, text

from meterbill.usage.partitions import create_partitions_ahead

MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed number: the PostgreSQL advisory lock that lets one process migrate at a time.
_MIGRATION_LOCK = 7_416_823_311


# Migrations are numbered in the order they run. Two revisions that had landed under other
# ids were renamed; a database stamped with an old id is restamped before upgrading.
RENAMED_REVISIONS = {"0004_jobs": "0002_jobs", "0002_usage": "0004_usage"}


def restamp_renamed_revisions(conn: Connection) -> None:
    """Rewrite an old revision id in `alembic_version` to the id it has now."""
    if not inspect(conn).has_table("alembic_version"):
        return
    for old, new in RENAMED_REVISIONS.items():
        conn.execute(
            text("UPDATE alembic_version SET version_num = :new WHERE version_num = :old"),
            {"new": new, "old": old},
        )


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision`; concurrent starts on PostgreSQL take turns."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
            try:
                restamp_renamed_revisions(conn)
                conn.commit()
                config = alembic_config(engine)
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
                conn.commit()
                if revision == "head":
                    create_partitions_ahead(engine, datetime.now(UTC))
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK})
                conn.commit()
        return
    with engine.begin() as conn:
        restamp_renamed_revisions(conn)
    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    """The newest revision of the migrations shipped with this version."""
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()
