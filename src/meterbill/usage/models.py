"""Raw usage events, the per-day totals kept up to date beside them, and quota alerts."""

from __future__ import annotations

from datetime import date, datetime
from datetime import date as date_

from sqlalchemy import (
    BigInteger,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from meterbill.db import Base, utcnow


class ConsumptionEvent(Base):
    """One usage event as received, kept for audit and for rebuilding totals.

    `month` is the first day of the event's UTC month. On PostgreSQL the table is
    partitioned by it (migration 0011_partitions; its primary key is (id, month)), and an
    event id counts once per user and month. There is no foreign key to `saas_users` (its
    per-row check was a fifth of an ingestion batch's time): the recording statement creates
    the users it needs, and a trigger on `saas_users` deletes a deleted user's events (see
    usage/partitions.py and the migration)."""

    __tablename__ = "consumption_log"
    # An event id is the sender's idempotency key within one user's events (and month).
    __table_args__ = (
        UniqueConstraint("user_id", "event_id", "month", name="uq_consumption_log_event"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[int] = mapped_column(BigInteger)
    date: Mapped[datetime]
    month: Mapped[date_] = mapped_column(Date)
    endpoint: Mapped[str | None] = mapped_column(String(512))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsageRetention(Base):
    """One row: raw events before `raw_since` were dropped by retention (their totals stay;
    rebuilding totals leaves the periods before it alone)."""

    __tablename__ = "usage_retention"

    id: Mapped[int] = mapped_column(primary_key=True)
    raw_since: Mapped[date_] = mapped_column(Date)


class UsageDaily(Base):
    """One metric for one user on one UTC day: the sum, the count and the largest value of
    its events, so that every aggregation (sum, count, max) reads from here."""

    __tablename__ = "usage_daily"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("saas_users.id", ondelete="CASCADE"), primary_key=True
    )
    metric: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    total: Mapped[int] = mapped_column(BigInteger, default=0)
    events: Mapped[int] = mapped_column(BigInteger, default=0)
    peak: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class UsageMonthly(Base):
    """One metric for one user in one UTC month (`YYYY-MM`), kept beside the daily rows in
    the same statement: a quota decision reads one row, and the totals an insert returns
    tell exactly which batch crossed an alert threshold."""

    __tablename__ = "usage_monthly"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("saas_users.id", ondelete="CASCADE"), primary_key=True
    )
    metric: Mapped[str] = mapped_column(String(64), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    total: Mapped[int] = mapped_column(BigInteger, default=0)
    events: Mapped[int] = mapped_column(BigInteger, default=0)
    peak: Mapped[int] = mapped_column(BigInteger, default=0)


class UsageAlert(Base):
    """A user reached `level` (soft: the plan's alert ratio, hard: 100 %) of a metric's
    `limit` in a month. The unique key makes each one recorded once, whoever races; a plan
    change brings a new limit, so its thresholds alert again."""

    __tablename__ = "usage_alerts"
    __table_args__ = (
        UniqueConstraint(
            "user_id", "metric", "month", "level", "limit", name="uq_usage_alerts_crossing"
        ),
        Index(
            "ix_usage_alerts_pending",
            "id",
            postgresql_where=text("notified_at IS NULL"),
            sqlite_where=text("notified_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("saas_users.id", ondelete="CASCADE"))
    metric: Mapped[str] = mapped_column(String(64))
    month: Mapped[str] = mapped_column(String(7))  # YYYY-MM
    level: Mapped[str] = mapped_column(String(8))  # soft | hard
    used: Mapped[int] = mapped_column(BigInteger)
    limit: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set by whatever hands the alert on (email, webhook); NULL means still to deliver.
    notified_at: Mapped[datetime | None]
