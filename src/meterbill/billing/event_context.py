"""What a Stripe event's handler works with: the open transaction, the event's row, a
Stripe gateway that never calls out (billing.stripe_reads), and who the event is about."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.auth.models import User
from meterbill.auth.service import lock_user
from meterbill.billing.models import BillingEvent
from meterbill.billing.stripe_objects import metadata_user_id
from meterbill.billing.stripe_reads import StripeReads
from meterbill.billing.subscriptions import refresh_subscription, sync_user_plan
from meterbill.config import Catalog, Settings

Outcome = tuple[str, str | None]


@dataclass
class EventContext:
    session: Session
    record: BillingEvent
    event: dict[str, Any]
    stripe: StripeReads
    settings: Settings
    catalog: Catalog
    grace: timedelta
    now: datetime
    # Customers this event linked to a user: their kept events are applied next.
    linked: list[str] = field(default_factory=list)

    @property
    def object(self) -> dict[str, Any]:
        return self.event["data"]["object"]  # type: ignore[no-any-return]


def resolve_user(ctx: EventContext, customer_id: str | None, claimed: str | None) -> User | None:
    """The user a Stripe object belongs to, locked: by customer id, else by the user id
    meterbill put in the metadata, else by asking Stripe for the customer's metadata."""
    if customer_id:
        ctx.record.stripe_customer_id = customer_id
        owner = ctx.session.scalars(
            select(User.id).where(User.stripe_customer_id == customer_id)
        ).one_or_none()
        if owner is not None:
            user = lock_user(ctx.session, owner)
            ctx.record.user_id = user.id
            return user
    user_id = claimed
    if not user_id and customer_id and ctx.stripe.configured:
        user_id = metadata_user_id(ctx.stripe.retrieve_customer(customer_id))
    if not user_id:
        return None
    user = lock_user(ctx.session, user_id)
    if customer_id and user.stripe_customer_id is None:
        user.stripe_customer_id = customer_id
        ctx.linked.append(customer_id)
    ctx.record.user_id = user.id
    return user


def refresh(ctx: EventContext, user: User, subscription_id: str) -> Outcome:
    """Fold the subscription's events again and write the user's plan."""
    ctx.record.user_id = user.id
    ctx.record.stripe_subscription_id = subscription_id
    ctx.session.flush()
    _, unknown = refresh_subscription(
        ctx.session, subscription_id, user.id, ctx.catalog, ctx.grace, ctx.now
    )
    sync_user_plan(ctx.session, user, ctx.now)
    if unknown:
        return "rejected", f"price not in the catalog: {', '.join(sorted(set(unknown)))}"
    return "applied", None
