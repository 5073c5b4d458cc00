"""Checkout, customer portal and subscription status for one user."""

from __future__ import annotations

from datetime import datetime

from meterbill.auth.models import User
from meterbill.auth.service import lock_user
from meterbill.billing.gateway import StripeGateway
from meterbill.billing.schemas import CheckoutOut, StatusOut
from meterbill.billing.subscriptions import current_subscription, effective_plan
from meterbill.config import Catalog, Settings
from meterbill.db import Database
from meterbill.errors import (
    AlreadyOnPlan,
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
    """A Stripe Checkout session selling `plan` to the user.

    The user's row stays locked while their Stripe customer is created, so two checkouts
    at once still make one customer; the customer id is committed before the session is
    created, so a failure after that point leaves a customer to reuse, not a duplicate.
    """
    if not gateway.configured:
        raise StripeNotConfigured()
    plan = plan.strip().lower()
    if plan == "free" or plan not in catalog.plans:
        raise InvalidPlan()
    price_id = catalog.plan(plan).stripe_price
    if not price_id:
        raise PriceNotConfigured(plan)
    with db.transaction() as session:
        user = lock_user(session, user_id, email)
        if effective_plan(current_subscription(session, user_id), now) == plan:
            raise AlreadyOnPlan(plan)
        if user.stripe_customer_id is None:
            user.stripe_customer_id = gateway.create_customer(user_id, user.email)
        customer_id = user.stripe_customer_id
    url, session_id = gateway.create_checkout_session(
        customer_id=customer_id, user_id=user_id, plan=plan, price_id=price_id
    )
    return CheckoutOut(
        checkout_url=url,
        session_id=session_id,
        plan=plan,
        publishable_key=settings.stripe_publishable_key,
    )


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
    )
