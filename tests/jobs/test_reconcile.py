"""Reconciliation against the Stripe peer (localstripe): webhooks that never arrived."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
import stripe
from sqlalchemy import select
from typer.testing import CliRunner

from meterbill.auth.models import User
from meterbill.auth.service import lock_user
from meterbill.billing.gateway import StripeGateway
from meterbill.billing.models import BillingEvent, Subscription
from meterbill.billing.reconcile import reconcile, stale_customers
from meterbill.cli import app
from meterbill.db import utcnow
from meterbill.jobs.models import Job
from tests import stripe_events as se
from tests.conftest import Service
from tests.jobs.conftest import Jobs
from tests.stripe_peer import StripePeer


@pytest.fixture
def client(stripe_peer: StripePeer) -> stripe.StripeClient:
    """The official SDK on the Stripe peer, as a test's stand-in for Stripe's dashboard."""
    return stripe.StripeClient(
        "sk_test_meterbill", base_addresses={"api": stripe_peer.url}, max_network_retries=0
    )


def _customer_with_subscription(
    client: stripe.StripeClient, jobs: Jobs, user_id: str, price: str
) -> tuple[str, dict[str, object]]:
    customer = client.v1.customers.create(
        params={"email": f"{user_id}@example.com", "metadata": {"user_id": user_id}}
    )
    # localstripe subscribes only customers with a default payment method.
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"plan": price}]}
    )
    with jobs.db.transaction() as session:
        user = lock_user(session, user_id, f"{user_id}@example.com")
        user.stripe_customer_id = customer.id
    return customer.id, sub.to_dict(for_json=True)  # as a webhook carries it


def _state(jobs: Jobs, user_id: str) -> tuple[str, str | None]:
    with jobs.db.reading() as session:
        user = session.get_one(User, user_id)
        sub = session.scalars(select(Subscription).where(Subscription.user_id == user_id)).first()
        return user.plan, sub.status if sub else None


def test_reconcile_heals_a_cancellation_and_a_creation_whose_webhooks_were_lost(
    stripe_service: Service,
    stripe_peer: StripePeer,
    client: stripe.StripeClient,
    make_jobs: Callable[..., Jobs],
) -> None:
    settings = stripe_service.settings
    jobs = make_jobs()
    price = str(settings.stripe_price_premium)
    _, sub = _customer_with_subscription(client, jobs, "u-canceled", price)
    created = se.event("customer.subscription.created", sub, created=int(sub["created"]))
    assert stripe_service.post_event(created).status_code == 200  # this one did arrive
    assert _state(jobs, "u-canceled") == ("premium", "active")
    # Canceled in Stripe; its customer.subscription.deleted never reaches meterbill.
    client.v1.subscriptions.cancel(str(sub["id"]))
    # Subscribed in Stripe; none of its webhooks reach meterbill.
    _customer_with_subscription(client, jobs, "u-unheard", price)
    assert _state(jobs, "u-canceled") == ("premium", "active")
    assert _state(jobs, "u-unheard") == ("free", None)

    # Neither looks stale yet: both are recent and not past due.
    assert stale_customers(jobs.db, utcnow(), settings.reconcile_stale_days) == []

    env = {
        "METERBILL_DATABASE_URL": settings.database_url,
        "STRIPE_SECRET_KEY": settings.stripe_secret_key,
        "STRIPE_API_BASE": settings.stripe_api_base,
        "STRIPE_PRICE_PREMIUM": price,
        "STRIPE_PRICE_PRO": str(settings.stripe_price_pro),
        "METERBILL_STRIPE_MAX_RETRIES": "0",
    }
    result = CliRunner().invoke(app, ["reconcile", "--all"], env=env)
    assert result.exit_code == 0, result.output
    assert "customers checked: 2, subscriptions healed: 2, failed: 0" in result.output

    assert _state(jobs, "u-canceled") == ("free", "canceled")
    assert _state(jobs, "u-unheard") == ("premium", "active")
    with jobs.db.reading() as session:
        synthetic = session.scalars(
            select(BillingEvent.event_type).where(
                BillingEvent.stripe_event_id.like("evt_meterbill_reconcile_%")
            )
        ).all()
        changed = session.scalars(select(Job).where(Job.kind == "webhook.event")).all()
    assert sorted(synthetic) == ["customer.subscription.deleted", "customer.subscription.updated"]
    assert len(changed) == 3  # free→premium (delivered), premium→free, free→premium

    again = CliRunner().invoke(app, ["reconcile", "--all"], env=env)
    assert "subscriptions healed: 0" in again.output  # nothing left to heal


def test_stale_customers_are_the_past_due_and_the_quiet_ones(
    stripe_service: Service,
    stripe_peer: StripePeer,
    client: stripe.StripeClient,
    make_jobs: Callable[..., Jobs],
) -> None:
    settings = stripe_service.settings
    jobs = make_jobs()
    customer, sub = _customer_with_subscription(
        client, jobs, "u1", str(settings.stripe_price_premium)
    )
    client.v1.subscriptions.cancel(str(sub["id"]))
    now = utcnow()
    assert stale_customers(jobs.db, now, 7) == []
    later = now + timedelta(days=8)  # a week without any event: worth a look
    assert stale_customers(jobs.db, later, 7) == [("u1", customer)]

    gateway = StripeGateway(settings)
    report = reconcile(jobs.db, settings, settings.catalog(), gateway, later)
    assert (report.customers, report.healed, report.failed) == (1, 0, 0)  # ended unheard
    assert stale_customers(jobs.db, later + timedelta(days=1), 7) == []  # just checked

    stripe_peer.fail("/v1/subscriptions", 500)
    try:
        report = reconcile(jobs.db, settings, settings.catalog(), gateway, later, everyone=True)
    finally:
        stripe_peer.clear_failures()
    assert (report.customers, report.failed) == (1, 1)  # logged, left for the next run


def test_reconcile_heals_with_the_objects_the_sdk_builds_from_stripe(
    stripe_service: Service,
    client: stripe.StripeClient,
    make_jobs: Callable[..., Jobs],
) -> None:
    """Stripe's subscriptions carry `unit_amount_decimal`, which the SDK turns into a
    Decimal; healing from them failed with "Object of type Decimal is not JSON
    serializable"."""
    settings = stripe_service.settings
    jobs = make_jobs()
    _, sub = _customer_with_subscription(client, jobs, "u-decimal", str(settings.stripe_price_pro))
    fetched = client.v1.subscriptions.retrieve(str(sub["id"])).to_dict()
    assert isinstance(fetched["items"]["data"][0]["price"]["unit_amount_decimal"], Decimal)
    assert _state(jobs, "u-decimal") == ("free", None)

    env = {
        "METERBILL_DATABASE_URL": settings.database_url,
        "STRIPE_SECRET_KEY": settings.stripe_secret_key,
        "STRIPE_API_BASE": settings.stripe_api_base,
        "STRIPE_PRICE_PREMIUM": str(settings.stripe_price_premium),
        "STRIPE_PRICE_PRO": str(settings.stripe_price_pro),
        "METERBILL_STRIPE_MAX_RETRIES": "0",
    }
    result = CliRunner().invoke(app, ["reconcile", "--all"], env=env)
    assert result.exit_code == 0, result.output
    assert "customers checked: 1, subscriptions healed: 1, failed: 0" in result.output
    assert _state(jobs, "u-decimal") == ("pro", "active")
