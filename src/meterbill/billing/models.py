"""Subscriptions mirrored from Stripe, and the log of Stripe events received."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from meterbill.db import Base, utcnow


class Subscription(Base):
    """One Stripe subscription of a user, as the newest event about it described it."""

    __tablename__ = "saas_subscriptions"
    __table_args__ = (Index("ix_saas_subscriptions_user_id_start", "user_id", "start_date"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("saas_users.id", ondelete="CASCADE"))
    plan: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), index=True)
    stripe_subscription_id: Mapped[str] = mapped_column(String(255), unique=True)
    stripe_price_id: Mapped[str | None] = mapped_column(String(255))
    start_date: Mapped[datetime] = mapped_column(default=utcnow)
    end_date: Mapped[datetime | None]
    current_period_end: Mapped[datetime | None]
    grace_period_end: Mapped[datetime | None]
    # The grace_period_end whose expiry was acted on (user downgraded and told); the fold
    # never writes it, so a new grace period is acted on again.
    grace_expired_for: Mapped[datetime | None]
    # `created` of the newest Stripe event folded into this row (see billing.subscriptions).
    state_event_created: Mapped[int] = mapped_column(BigInteger, default=0)
    # What Stripe says will happen at the period's end (written by the fold).
    cancel_at_period_end: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    cancel_at: Mapped[datetime | None]
    stripe_schedule_id: Mapped[str | None] = mapped_column(String(255))
    # The downgrade meterbill scheduled (billing.plans), from Stripe's answer; it is pending
    # while the subscription is still attached to that schedule.
    pending_plan: Mapped[str | None] = mapped_column(String(64))
    pending_plan_at: Mapped[datetime | None]
    pending_schedule_id: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class BillingEvent(Base):
    """Every Stripe event received, once; its row is written with the change it causes."""

    __tablename__ = "billing_events"
    __table_args__ = (Index("ix_billing_events_outcome_customer", "outcome", "stripe_customer_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    stripe_event_id: Mapped[str] = mapped_column(String(255), unique=True)
    event_type: Mapped[str] = mapped_column(String(128), index=True)
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("saas_users.id", ondelete="SET NULL"), index=True
    )
    payload: Mapped[str | None] = mapped_column(Text)
    # The subscription the event is about, and the subscription as fetched from Stripe when
    # the event itself does not carry it (checkout.session.completed).
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255), index=True)
    snapshot: Mapped[str | None] = mapped_column(Text)
    # When `snapshot` was fetched from Stripe to settle snapshots sharing one `created`
    # second (milliseconds since the epoch; 0: the event's own object). See the fold.
    snapshot_fetched_ms: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The Stripe customer of the event's object: a payment or refund nobody could be
    # found for is kept (`unresolved`) and applied once this customer is linked to a user.
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255))
    stripe_created: Mapped[int] = mapped_column(BigInteger, default=0)
    outcome: Mapped[str] = mapped_column(String(32), default="applied")
    error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
