"""One Checkout Session open per user, so that a user never pays for two subscriptions.

Each checkout first expires the user's open sessions, so that an abandoned session for one
plan cannot be paid after another plan was asked for. The open sessions are listed at
Stripe by customer rather than remembered in the database: Stripe is where a session can
be paid, and the list holds every session, whichever process made it, before or after a
crash between Stripe's answer and a database write, with no table to keep in step.

- An open session selling the same plan at the same price, valid an hour more, is answered
  again instead of a new one (a retried request, or the same request twice at once).
- Stripe refuses to expire a paid session: then the user has, or is about to have, a
  subscription (409 `checkout_already_completed`), as when a paid session names a
  subscription meterbill has not heard of yet and Stripe still bills.
- Two requests for different plans at the same moment each see no open session and each
  create one; after creating, a request lists the open sessions again, the newest is kept
  (by `created`, then id: every request ranks them alike) and the others are expired; the
  request whose session lost answers 409 `checkout_superseded`.

Stripe is called with no database transaction open (SQLite has one writer).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.billing.gateway import StripeGateway
from meterbill.billing.models import Subscription
from meterbill.billing.subscriptions import FINAL_STATUSES
from meterbill.db import Database
from meterbill.errors import (
    CheckoutAlreadyCompleted,
    CheckoutSuperseded,
    SubscriptionPaused,
    SubscriptionPaymentPending,
)

# An open session is answered again only while it has this long left to be paid.
REUSE_MARGIN_SECONDS = 3600
# Stripe keeps an `incomplete` subscription payable for 23 hours, then expires it.
INCOMPLETE_WINDOW = timedelta(hours=23)


def refuse_while_pending(session: Session, user_id: str, now: datetime) -> None:
    """A paused subscription is resumed through the portal, and one whose first payment is
    awaited may still start: neither leaves room for a second subscription."""
    row = session.scalars(
        select(Subscription)
        .where(
            Subscription.user_id == user_id,
            Subscription.status.in_(("paused", "incomplete")),
        )
        .order_by(Subscription.start_date.desc(), Subscription.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return
    if row.status == "paused":
        raise SubscriptionPaused()
    until = row.start_date + INCOMPLETE_WINDOW
    if now < until:
        raise SubscriptionPaymentPending(until.isoformat(timespec="seconds"))


def open_checkout(
    db: Database,
    gateway: StripeGateway,
    *,
    customer_id: str,
    user_id: str,
    plan: str,
    price_id: str,
    key: str,
    now: datetime,
) -> dict[str, Any]:
    """The one open Checkout Session of the user, selling `plan` at `price_id`; every other
    open session of the user is expired. `key` names the state the request started from."""
    # Only subscription sessions: a one-off payment the SaaS sells through the same
    # customer is none of checkout's business.
    sessions = _subscription_sessions(gateway.list_checkout_sessions(customer_id))
    _refuse_paid_unrecorded(db, gateway, sessions)
    reused: dict[str, Any] | None = None
    for other in sessions:
        if other.get("status") != "open":
            continue
        if reused is None and _sells(other, user_id, plan, price_id, now):
            reused = other
            continue
        _expire(gateway, other)
    if reused is None:
        # The newest session seen names the state: requests made from the same state (the
        # same request twice at once) share one session; any later one starts from the
        # session made, so Stripe never replays a session expired since.
        newest = sessions[0]["id"] if sessions else "none"
        reused = gateway.create_checkout_session(
            customer_id=customer_id,
            user_id=user_id,
            plan=plan,
            price_id=price_id,
            key=_key(key, str(newest)),
        )
    return _keep_newest(gateway, reused, customer_id, user_id, plan, price_id, now)


def _subscription_sessions(sessions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [session for session in sessions if session.get("mode") == "subscription"]


def _key(*parts: str) -> str:
    """An idempotency key for these parts (Stripe takes at most 255 characters)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]
    return f"meterbill-checkout-{digest}"


def _sells(session: dict[str, Any], user_id: str, plan: str, price_id: str, now: datetime) -> bool:
    metadata = session.get("metadata") or {}
    return (
        session.get("status") == "open"
        and metadata.get("user_id") == user_id
        and metadata.get("plan") == plan
        and metadata.get("price") == price_id
        and int(session.get("expires_at") or 0) >= now.timestamp() + REUSE_MARGIN_SECONDS
    )


def _expire(gateway: StripeGateway, session: dict[str, Any]) -> None:
    if gateway.expire_checkout_session(str(session["id"])).get("status") == "complete":
        raise CheckoutAlreadyCompleted()


def _refuse_paid_unrecorded(
    db: Database, gateway: StripeGateway, sessions: list[dict[str, Any]]
) -> None:
    """A paid session whose subscription meterbill has not recorded yet (its webhook is on
    its way) counts as the subscription it made, while Stripe still bills it."""
    paid = {
        str(s["subscription"])
        for s in sessions
        if s.get("status") == "complete" and isinstance(s.get("subscription"), str)
    }
    if not paid:
        return
    with db.reading() as session:
        known = set(
            session.scalars(
                select(Subscription.stripe_subscription_id).where(
                    Subscription.stripe_subscription_id.in_(paid)
                )
            )
        )
    for subscription_id in sorted(paid - known):
        subscription = gateway.retrieve_subscription(subscription_id)
        if subscription.get("status") not in FINAL_STATUSES:
            raise CheckoutAlreadyCompleted()


def _rank(session: dict[str, Any]) -> tuple[int, str]:
    return int(session.get("created") or 0), str(session.get("id"))


def _keep_newest(
    gateway: StripeGateway,
    mine: dict[str, Any],
    customer_id: str,
    user_id: str,
    plan: str,
    price_id: str,
    now: datetime,
) -> dict[str, Any]:
    """Settle a race with another checkout of the user: the newest open session stays."""
    open_now = _subscription_sessions(gateway.list_checkout_sessions(customer_id, status="open"))
    if not open_now:
        raise CheckoutSuperseded()  # mine was expired by a request whose create failed
    newest = max(open_now, key=_rank)
    for other in open_now:
        if other["id"] != newest["id"]:
            _expire(gateway, other)
    if newest["id"] == mine["id"]:
        return mine
    if _sells(newest, user_id, plan, price_id, now):
        return newest  # the same purchase, asked twice at once
    raise CheckoutSuperseded()
