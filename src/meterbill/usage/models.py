"""Raw usage events and the per-day totals kept up to date beside them."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from meterbill.db import Base, utcnow


class ConsumptionEvent(Base):
    """One usage event as received, kept for audit and for rebuilding totals."""

    __tablename__ = "consumption_log"
    __table_args__ = (UniqueConstraint("event_id", name="uq_consumption_log_event_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(ForeignKey("saas_users.id", ondelete="CASCADE"))
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[int] = mapped_column(BigInteger)
    date: Mapped[datetime]
    endpoint: Mapped[str | None] = mapped_column(String(512))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsageDaily(Base):
    """The total of one metric for one user on one UTC day."""

    __tablename__ = "usage_daily"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("saas_users.id", ondelete="CASCADE"), primary_key=True
    )
    metric: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    total: Mapped[int] = mapped_column(BigInteger, default=0)
    events: Mapped[int] = mapped_column(BigInteger, default=0)
