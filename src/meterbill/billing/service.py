"""Checkout, customer portal and subscription status for one user."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update

from meterbill.auth.models import User
from meterbill.auth.service import ensure_user
from meterbill.billing.checkout import open_checkout, refuse_while_pending
from meterbill.billing.gateway import StripeGateway
from meterbill.billing.plans import billed_subscription, refuse_second_subscription
from meterbill.billing.schemas import CheckoutOut, StatusOut
from meterbill.billing.subscriptions import current_subscription, effective_plan
from meterbill.config import Catalog, Settings
from meterbill.db import Database
from meterbill.errors import (
    InvalidPlan,
    NoStripeCustomer,
    PriceNotConfigured,
    StripeNotConfigured,
)


def start_checkout(
    db: Database,
    settings: Settings,
    catalog: Catalog,
    gateway: StripeGateway,
    user_id: str,
    email: str | None,
    plan: str,
    now: datetime,
) -> CheckoutOut:
    """The user's one open Stripe Checkout session, selling `plan` to a user who pays for no
    subscription (billing.checkout expires any other open session of theirs).

    Stripe is called outside any database transaction (SQLite has one writer): the
    customer is created under the user's idempotency key, so concurrent checkouts get the
    same one, and linked with a conditional update that keeps the first link made.
    """
    if not gateway.configured:
        raise StripeNotConfigured()
    plan = plan.strip().lower()
    if plan == "free" or plan not in catalog.plans:
        raise InvalidPlan()
    price_id = catalog.plan(plan).stripe_price
    if not price_id:
        raise PriceNotConfigured(plan)
    with db.reading() as session:
        user = session.get(User, user_id)
        customer_id = user.stripe_customer_id if user else None
        known_email = user.email if user else None
        billed = billed_subscription(session, user_id)
        refuse_second_subscription(billed, plan, now)
        refuse_while_pending(session, user_id, now)
    if customer_id is None:
        created = gateway.create_customer(user_id, email or known_email)
        customer_id = link_customer(db, user_id, email, created)
    # The state the request starts from: the same request twice at once gets one session.
    marker = f"{billed.row.stripe_subscription_id}-{billed.marker}" if billed else "none"
    checkout = open_checkout(
        db,
        gateway,
        customer_id=customer_id,
        user_id=user_id,
        plan=plan,
        price_id=price_id,
        key=f"{user_id}-{plan}-{price_id}-{customer_id}-{marker}",
        now=now,
    )
    return CheckoutOut(
        checkout_url=str(checkout["url"]),
        session_id=str(checkout["id"]),
        plan=plan,
        publishable_key=settings.stripe_publishable_key,
    )


def link_customer(db: Database, user_id: str, email: str | None, customer_id: str) -> str:
    """Link the Stripe customer to the user unless one is linked already; the customer
    linked first wins and is returned."""
    with db.transaction() as session:
        ensure_user(session, user_id, email)
        session.execute(
            update(User)
            .where(User.id == user_id, User.stripe_customer_id.is_(None))
            .values(stripe_customer_id=customer_id)
        )
        linked = session.scalars(select(User.stripe_customer_id).where(User.id == user_id)).one()
    return linked or customer_id


def open_portal(db: Database, gateway: StripeGateway, user_id: str) -> str:
    """A Stripe customer portal URL for a user who already has a Stripe customer."""
    if not gateway.configured:
        raise StripeNotConfigured()
    with db.reading() as session:
        user = session.get(User, user_id)
        customer_id = user.stripe_customer_id if user else None
    if not customer_id:
        raise NoStripeCustomer()
    return gateway.create_portal_session(customer_id)


def subscription_status(db: Database, user_id: str, now: datetime) -> StatusOut:
    with db.reading() as session:
        subscription = current_subscription(session, user_id)
        user = session.get(User, user_id)
    if subscription is None:
        return StatusOut(
            plan="free",
            status="active",
            stripe_customer_id=user.stripe_customer_id if user else None,
        )
    pending = (
        subscription.pending_plan is not None
        and subscription.pending_plan != subscription.plan
        and subscription.stripe_schedule_id is not None
        and subscription.stripe_schedule_id == subscription.pending_schedule_id
        and subscription.status != "canceled"
    )
    canceling = subscription.status != "canceled" and (
        subscription.cancel_at_period_end or subscription.cancel_at is not None
    )
    return StatusOut(
        plan=effective_plan(subscription, now),
        status=subscription.status,
        stripe_customer_id=subscription.stripe_customer_id
        or (user.stripe_customer_id if user else None),
        stripe_subscription_id=subscription.stripe_subscription_id,
        start_date=subscription.start_date,
        end_date=subscription.end_date,
        current_period_end=subscription.current_period_end,
        grace_period_end=subscription.grace_period_end,
        cancel_at_period_end=canceling,
        cancel_at=(subscription.cancel_at or subscription.current_period_end)
        if canceling
        else None,
        pending_plan=subscription.pending_plan if pending else None,
        pending_plan_at=subscription.pending_plan_at if pending else None,
    )
