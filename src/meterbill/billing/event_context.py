"""What a Stripe event's handler works with: the open transaction, the event's row, a
Stripe gateway that never calls out (billing.stripe_reads), and who the event is about."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from meterbill.auth.models import User
from meterbill.auth.service import lock_user
from meterbill.billing.models import BillingEvent, Subscription
from meterbill.billing.stripe_objects import metadata_user_id
from meterbill.billing.stripe_reads import StripeReads
from meterbill.billing.subscriptions import (
    BILLABLE_STATUSES,
    refresh_subscription,
    sync_user_plan,
)
from meterbill.config import Catalog, Settings
from meterbill.db import insert_for, utcnow

Outcome = tuple[str, str | None]
# session.info key: the users this transaction saw holding two live subscriptions.
DUPLICATES_FOUND = "meterbill.billing.duplicates_found"


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
    if any(isinstance(row, User) for row in ctx.session.dirty):
        ctx.session.flush()  # the lookups below must see (and not reload over) them
    # The event's row is written with what this finds, in one UPDATE, at the next flush.
    with ctx.session.no_autoflush:
        return _resolve_user(ctx, customer_id, claimed)


def _resolve_user(ctx: EventContext, customer_id: str | None, claimed: str | None) -> User | None:
    if customer_id:
        ctx.record.stripe_customer_id = customer_id
        # Found and locked in one round trip (the row exists: no need to create it).
        owner = ctx.session.scalars(
            select(User)
            .where(User.stripe_customer_id == customer_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one_or_none()
        if owner is not None:
            ctx.record.user_id = owner.id
            return owner
    user_id = claimed
    if not user_id and customer_id and ctx.stripe.configured:
        user_id = metadata_user_id(ctx.stripe.retrieve_customer(customer_id))
    if not user_id:
        return None
    if customer_id:
        user = _link_user(ctx.session, user_id, customer_id)
        if user.stripe_customer_id == customer_id:  # no user had it: linked just now
            ctx.linked.append(customer_id)
    else:
        user = lock_user(ctx.session, user_id)
    ctx.record.user_id = user.id
    return user


def _link_user(session: Session, user_id: str, customer_id: str) -> User:
    """The user, created if needed, given the customer unless it has one, and locked: one
    round trip (an upsert locks the row it updates until the transaction ends)."""
    now = utcnow()
    statement = insert_for(session)(User).values(
        id=user_id, plan="free", stripe_customer_id=customer_id, created_at=now, updated_at=now
    )
    unlinked = User.stripe_customer_id.is_(None)
    statement = statement.on_conflict_do_update(
        index_elements=["id"],
        set_={
            "stripe_customer_id": func.coalesce(
                User.stripe_customer_id, statement.excluded.stripe_customer_id
            ),
            "updated_at": case((unlinked, statement.excluded.updated_at), else_=User.updated_at),
        },
    )
    user: User = session.scalars(
        statement.returning(User).execution_options(populate_existing=True)
    ).one()
    return user


def refresh(ctx: EventContext, user: User, subscription_id: str) -> Outcome:
    """Fold the subscription's events again and write the user's plan."""
    ctx.record.user_id = user.id
    ctx.record.stripe_subscription_id = subscription_id
    ctx.session.flush()
    loaded: list[Subscription] = []  # the user's rows, read once for both steps
    _, unknown = refresh_subscription(
        ctx.session, subscription_id, user.id, ctx.catalog, ctx.grace, ctx.now, loaded
    )
    sync_user_plan(ctx.session, user, ctx.now, loaded)
    if sum(row.user_id == user.id and row.status in BILLABLE_STATUSES for row in loaded) > 1:
        # Read here, with the user locked: the webhook cancels the one not kept once this
        # transaction commits (billing.duplicates), and no event pays a second read.
        ctx.session.info.get(DUPLICATES_FOUND, set()).add(user.id)
    if unknown:
        return "rejected", f"price not in the catalog: {', '.join(sorted(set(unknown)))}"
    return "applied", None
