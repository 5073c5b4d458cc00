"""Alembic environment: the engine or connection comes from meterbill.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from meterbill.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    engine = config.attributes.get("engine") or create_engine(
        config.get_main_option("sqlalchemy.url") or "sqlite:///meterbill.db"
    )
    with engine.connect() as conn:
        _run_on(conn)
        conn.commit()


def _run_on(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
