"""End users (the SaaS's own users) and server-to-server API keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from meterbill.db import Base, utcnow


class User(Base):
    """A user of the SaaS, known by the SaaS's own id (the JWT's ``sub``)."""

    __tablename__ = "saas_users"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320))
    # The plan last written by a subscription change; limits use the effective plan instead.
    plan: Mapped[str] = mapped_column(String(64), default="free")
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    # Language of the emails sent to the user: "fr" (the seed's) or "en".
    locale: Mapped[str] = mapped_column(String(8), default="fr", server_default="fr")
    # When reconciliation last compared this user's subscriptions with Stripe.
    reconciled_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ApiKey(Base):
    """A server-to-server key; only a SHA-256 digest of its secret part is kept."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    # Space-separated: ingest (send usage), read (quota checks), admin (everything else).
    scopes: Mapped[str] = mapped_column(
        String(64), default="ingest read admin", server_default="ingest read admin"
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
