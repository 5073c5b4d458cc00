"""Stripe webhooks: verified, recorded once, and applied in the same transaction."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import stripe
from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.auth.models import User
from meterbill.auth.service import lock_user
from meterbill.billing.gateway import StripeGateway
from meterbill.billing.models import BillingEvent, Subscription
from meterbill.billing.stripe_objects import (
    customer_id_of,
    invoice_subscription_id,
    metadata_user_id,
    read_subscription,
)
from meterbill.billing.subscriptions import refresh_subscription, sync_user_plan
from meterbill.config import Catalog, Settings
from meterbill.db import Database, insert_for
from meterbill.errors import (
    InvalidPayload,
    InvalidSignature,
    WebhookFailed,
    WebhookNotConfigured,
)
from meterbill.invoicing.service import (
    record_failed_payment,
    record_invoice_payment,
    record_refunds,
)
from meterbill.notify.service import notify_invoice_issued, notify_payment_failed

log = logging.getLogger("meterbill.webhooks")
SIGNATURE_TOLERANCE_SECONDS = 300


def parse_stripe_event(settings: Settings, payload: bytes, signature: str | None) -> dict[str, Any]:
    """The event in `payload`, once its `Stripe-Signature` is verified by Stripe's library.

    With no webhook secret configured, events are refused (503) unless the operator has
    opted into unsigned events for local development.
    """
    if settings.stripe_webhook_secret:
        try:
            stripe.WebhookSignature.verify_header(
                payload.decode("utf-8"),
                signature or "",
                settings.stripe_webhook_secret,
                SIGNATURE_TOLERANCE_SECONDS,
            )
        except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
            raise InvalidSignature() from exc
    elif not settings.insecure_webhooks:
        raise WebhookNotConfigured()
    try:
        event = json.loads(payload)
    except ValueError as exc:
        raise InvalidPayload() from exc
    if not (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and isinstance(event.get("type"), str)
        and isinstance(event.get("data"), dict)
        and isinstance(event["data"].get("object"), dict)
        and "\x00" not in event["id"] + event["type"]
    ):
        raise InvalidPayload()
    return event


@dataclass
class EventContext:
    session: Session
    record: BillingEvent
    event: dict[str, Any]
    gateway: StripeGateway
    catalog: Catalog
    grace: timedelta
    now: datetime

    @property
    def object(self) -> dict[str, Any]:
        return self.event["data"]["object"]  # type: ignore[no-any-return]


def apply_stripe_event(
    db: Database,
    settings: Settings,
    catalog: Catalog,
    gateway: StripeGateway,
    event: dict[str, Any],
    now: datetime,
) -> str:
    """Record the event and apply it, atomically; a redelivery changes nothing.

    Returns the outcome written on the event's row: ``applied``, ``duplicate``,
    ``ignored`` (a type meterbill does not act on), ``unresolved`` (no user could be found)
    or ``rejected`` (e.g. a price that is not in the catalog). Any failure rolls the
    whole event back and raises WebhookFailed (500), so that Stripe delivers it again.
    """
    try:
        return _record_and_apply(db, settings, catalog, gateway, event, now)
    except Exception as exc:
        log.exception(
            "stripe event failed; rolled back",
            extra={"event_id": event["id"], "event_type": event["type"]},
        )
        raise WebhookFailed() from exc


def _record_and_apply(
    db: Database,
    settings: Settings,
    catalog: Catalog,
    gateway: StripeGateway,
    event: dict[str, Any],
    now: datetime,
) -> str:
    with db.transaction() as session:
        created = event.get("created")
        inserted = session.execute(
            insert_for(session)(BillingEvent)
            .values(
                stripe_event_id=event["id"],
                event_type=event["type"],
                payload=json.dumps(event, separators=(",", ":")),
                stripe_created=int(created) if isinstance(created, int | float) else 0,
                outcome="applied",
                received_at=now,
            )
            .on_conflict_do_nothing(index_elements=["stripe_event_id"])
            .returning(BillingEvent.id)
        ).scalar_one_or_none()
        if inserted is None:
            return "duplicate"
        record = session.get_one(BillingEvent, inserted)
        context = EventContext(
            session,
            record,
            event,
            gateway,
            catalog,
            timedelta(days=settings.grace_days),
            now,
        )
        handler = _HANDLERS.get(event["type"])
        outcome, error = handler(context) if handler else ("ignored", None)
        record.outcome, record.error = outcome, error
        if error:
            log.warning(
                "stripe event not applied",
                extra={
                    "event_id": event["id"],
                    "event_type": event["type"],
                    "outcome": outcome,
                    "reason": error,
                },
            )
        return outcome


def _resolve_user(ctx: EventContext, customer_id: str | None, claimed: str | None) -> User | None:
    """The user a Stripe object belongs to, locked: by customer id, else by the user id
    meterbill put in the metadata, else by asking Stripe for the customer's metadata."""
    if customer_id:
        owner = ctx.session.scalars(
            select(User.id).where(User.stripe_customer_id == customer_id)
        ).one_or_none()
        if owner is not None:
            return lock_user(ctx.session, owner)
    user_id = claimed
    if not user_id and customer_id and ctx.gateway.configured:
        user_id = metadata_user_id(ctx.gateway.retrieve_customer(customer_id))
    if not user_id:
        return None
    user = lock_user(ctx.session, user_id)
    if customer_id and user.stripe_customer_id is None:
        user.stripe_customer_id = customer_id
    ctx.record.user_id = user.id
    return user


def _refresh(ctx: EventContext, user: User, subscription_id: str) -> tuple[str, str | None]:
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


def _on_subscription(ctx: EventContext) -> tuple[str, str | None]:
    snapshot = read_subscription(ctx.object)
    if snapshot is None:
        return "rejected", "event carries no subscription"
    ctx.record.stripe_subscription_id = snapshot.id
    user = _resolve_user(ctx, snapshot.customer_id, snapshot.user_id)
    if user is None:
        return "unresolved", f"no user for customer {snapshot.customer_id}"
    return _refresh(ctx, user, snapshot.id)


def _on_checkout_completed(ctx: EventContext) -> tuple[str, str | None]:
    session_obj = ctx.object
    user = _resolve_user(ctx, customer_id_of(session_obj), metadata_user_id(session_obj))
    if user is None:
        return "unresolved", f"no user for customer {customer_id_of(session_obj)}"
    subscription_id = session_obj.get("subscription")
    if isinstance(subscription_id, dict):
        subscription_id = subscription_id.get("id")
    if not isinstance(subscription_id, str):
        return "applied", None
    if not _subscription_described(ctx.session, subscription_id) and ctx.gateway.configured:
        # The session does not say what was bought; Stripe's subscription does.
        fetched = ctx.gateway.retrieve_subscription(subscription_id)
        ctx.record.snapshot = json.dumps(fetched, separators=(",", ":"), default=str)
    return _refresh(ctx, user, subscription_id)


def _subscription_described(session: Session, subscription_id: str) -> bool:
    return (
        session.scalars(
            select(Subscription.id).where(Subscription.stripe_subscription_id == subscription_id)
        ).first()
        is not None
    )


def _invoice_context(ctx: EventContext) -> tuple[User | None, str | None]:
    invoice = ctx.object
    subscription_id = invoice_subscription_id(invoice)
    if subscription_id:
        ctx.record.stripe_subscription_id = subscription_id
    return _resolve_user(ctx, customer_id_of(invoice), metadata_user_id(invoice)), subscription_id


def _on_payment_failed(ctx: EventContext) -> tuple[str, str | None]:
    user, subscription_id = _invoice_context(ctx)
    if user is None:
        return "unresolved", f"no user for customer {customer_id_of(ctx.object)}"
    record_failed_payment(ctx.session, user.id, ctx.object, ctx.event["id"], ctx.now)
    outcome = _refresh(ctx, user, subscription_id) if subscription_id else ("applied", None)
    _tell_payment_failed(ctx, user, subscription_id)
    return outcome


def _tell_payment_failed(ctx: EventContext, user: User, subscription_id: str | None) -> None:
    """Email the user and tell the SaaS, once per failed attempt, unless the subscription
    is already settled by a later event (a late failure notice must not alarm anyone)."""
    row = None
    if subscription_id:
        row = ctx.session.scalars(
            select(Subscription).where(Subscription.stripe_subscription_id == subscription_id)
        ).one_or_none()
        if row is None or row.status not in ("past_due", "unpaid", "incomplete"):
            return
    invoice = ctx.object
    attempt = invoice.get("attempt_count")
    notify_payment_failed(
        ctx.session,
        user.id,
        cause=f"{invoice.get('id')}:{attempt}" if invoice.get("id") else ctx.event["id"],
        plan=row.plan if row else None,
        amount=invoice.get("amount_due"),
        currency=invoice.get("currency"),
        grace_period_end=row.grace_period_end if row else None,
        subscription_id=subscription_id,
        now=ctx.now,
    )


def _on_payment_succeeded(ctx: EventContext) -> tuple[str, str | None]:
    user, subscription_id = _invoice_context(ctx)
    if user is None:
        return "unresolved", f"no user for customer {customer_id_of(ctx.object)}"
    invoice = record_invoice_payment(
        ctx.session,
        user.id,
        ctx.object,
        ctx.event["id"],
        ctx.now,
        settings=ctx.gateway.settings,
        catalog=ctx.catalog,
        gateway=ctx.gateway,
    )
    if invoice is not None:
        notify_invoice_issued(ctx.session, invoice.id)
    return _refresh(ctx, user, subscription_id) if subscription_id else ("applied", None)


def _on_charge_refunded(ctx: EventContext) -> tuple[str, str | None]:
    charge = ctx.object
    user = _resolve_user(ctx, customer_id_of(charge), metadata_user_id(charge))
    if user is None:
        return "unresolved", f"no user for customer {customer_id_of(charge)}"
    record_refunds(
        ctx.session,
        user.id,
        charge,
        ctx.event["id"],
        ctx.now,
        settings=ctx.gateway.settings,
        gateway=ctx.gateway,
    )
    return "applied", None


_HANDLERS = {
    "customer.subscription.created": _on_subscription,
    "customer.subscription.updated": _on_subscription,
    "customer.subscription.deleted": _on_subscription,
    "checkout.session.completed": _on_checkout_completed,
    "invoice.payment_failed": _on_payment_failed,
    "invoice.payment_succeeded": _on_payment_succeeded,
    "invoice.paid": _on_payment_succeeded,
    "charge.refunded": _on_charge_refunded,
}
