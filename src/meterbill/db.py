"""Engine, sessions and the SQLite pragmas that make SQLite behave like a real database."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, Select, create_engine, event, make_url, text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use UTC-aware times")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite keeps no offset; we only ever store UTC
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime()}  # noqa: RUF012 (SQLAlchemy reads it)


def utcnow() -> datetime:
    return datetime.now(UTC)


def is_sqlite(engine_or_url: Engine | str) -> bool:
    url = engine_or_url if isinstance(engine_or_url, str) else str(engine_or_url.url)
    return url.startswith("sqlite")


def url_for_display(url: str) -> str:
    """The database URL with its password masked: what may be printed or logged."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with meterbill's connection rules applied.

    On SQLite: foreign keys on, WAL journal, a busy timeout, and transactions that take the
    write lock when they begin (``BEGIN IMMEDIATE``) so that two writers queue instead of
    failing half-way; read-only sessions (``readonly=True``) begin deferred.
    """
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if is_sqlite(url):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    # No pre-ping on every checkout (a round trip per request): the pool hands out the most
    # recently used connection (LIFO), pings only one that sat idle (`_ping_idle`), and
    # recycles connections before servers or middleboxes drop them.
    kwargs.setdefault("pool_recycle", 1800)
    kwargs.setdefault("pool_use_lifo", True)
    engine = create_engine(url, **kwargs)
    _ping_idle(engine)
    return engine


IDLE_PING_SECONDS = 2.0


def _ping_idle(engine: Engine) -> None:
    """Ping a pooled connection at checkout only when it sat idle for a while (a database
    restart or a dropped connection happens then); under load none is pinged. A dead one
    is replaced before the request uses it (SQLAlchemy retries on DisconnectionError)."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
            return
        try:
            dbapi_connection.execute("SELECT 1")
            dbapi_connection.rollback()
        except Exception as exc:
            raise DisconnectionError() from exc


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get("readonly"):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """The engine and the two kinds of session the service opens."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.sqlite = is_sqlite(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readonly = sessionmaker(
            self.engine.execution_options(readonly=True), expire_on_commit=False
        )

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any error."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads only (on SQLite it does not take the write lock)."""
        with self._readonly() as session, session.begin():
            yield session

    @contextmanager
    def autocommit(self) -> Iterator[Any]:
        """A pooled driver (psycopg) connection in autocommit mode: each statement is a
        transaction of its own. For hot paths written as single statements."""
        proxied = self.engine.raw_connection()
        raw: Any = proxied.driver_connection
        try:
            raw.autocommit = True
            yield raw
        except Exception:
            if raw.closed or raw.broken:
                proxied.invalidate()  # a lost connection never goes back to the pool
            raise
        finally:
            if not raw.closed:
                raw.autocommit = False
            proxied.close()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def insert_for(session: Session) -> Any:
    """The dialect's INSERT construct, which knows ``ON CONFLICT`` on both databases."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def page_of(
    session: Session, query: Select[Any], page: int, per_page: int
) -> tuple[list[Any], bool]:
    """One page of an ordered query's rows, and whether more rows follow it (one extra row
    is read instead of counting them all)."""
    rows = list(session.scalars(query.offset((page - 1) * per_page).limit(per_page + 1)))
    return rows[:per_page], len(rows) > per_page
