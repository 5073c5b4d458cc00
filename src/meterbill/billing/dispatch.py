"""Where each Stripe event type goes: the subscription fold (billing), the ledger and
documents (invoicing), messages (notify). One event's flow reads top to bottom here.

Every handler runs inside the event's write transaction and reads Stripe only through
`ctx.stripe` (answers fetched before the transaction, billing.stripe_reads).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.auth.models import User
from meterbill.billing.event_context import EventContext, Outcome, refresh, resolve_user
from meterbill.billing.models import BillingEvent, Subscription
from meterbill.billing.stripe_objects import (
    SubscriptionSnapshot,
    customer_id_of,
    invoice_subscription_id,
    invoice_user_id,
    metadata_user_id,
    read_subscription,
)
from meterbill.billing.subscriptions import SNAPSHOT_EVENTS, event_snapshot
from meterbill.invoicing.service import (
    record_failed_payment,
    record_invoice_payment,
    record_refunds,
)
from meterbill.notify.service import notify_invoice_issued, notify_payment_failed

Handler = Callable[[EventContext], Outcome]


def on_subscription(ctx: EventContext) -> Outcome:
    snapshot = read_subscription(ctx.object)
    if snapshot is None:
        return "rejected", "event carries no subscription"
    ctx.record.stripe_subscription_id = snapshot.id
    user = resolve_user(ctx, snapshot.customer_id, snapshot.user_id)
    if user is None:
        return "unresolved", f"no user for customer {snapshot.customer_id}"
    if ctx.stripe.configured and _differs_in_its_second(ctx, snapshot):
        # Which of two snapshots of one second is newer cannot be told from the events:
        # Stripe's subscription, asked now, is newer than both; the fold applies it last
        # in that second.
        _keep_stripe_answer(ctx, ctx.stripe.retrieve_subscription(snapshot.id))
    return refresh(ctx, user, snapshot.id)


def _differs_in_its_second(ctx: EventContext, snapshot: SubscriptionSnapshot) -> bool:
    """Whether another snapshot of the subscription, created in the same second as this
    event, describes it differently."""
    siblings = ctx.session.scalars(
        select(BillingEvent).where(
            BillingEvent.stripe_subscription_id == snapshot.id,
            BillingEvent.stripe_created == ctx.record.stripe_created,
            BillingEvent.event_type.in_(SNAPSHOT_EVENTS),
            BillingEvent.id != ctx.record.id,
        )
    ).all()
    mine = _described(ctx.record.event_type, snapshot)
    for sibling in siblings:
        body = json.loads(sibling.payload or "{}").get("data", {}).get("object", {})
        other = event_snapshot(sibling, body)
        if other is not None and _described(sibling.event_type, other) != mine:
            return True
    return False


def _described(event_type: str, snapshot: SubscriptionSnapshot) -> tuple[object, ...]:
    status = "canceled" if event_type.endswith(".deleted") else snapshot.status
    return (
        status,
        snapshot.price_id,
        snapshot.current_period_end,
        snapshot.ended_at,
        snapshot.cancel_at_period_end,
        snapshot.schedule_id,
    )


def _keep_stripe_answer(ctx: EventContext, subscription: dict[str, object]) -> None:
    ctx.record.snapshot = json.dumps(subscription, separators=(",", ":"), default=str)
    ctx.record.snapshot_fetched_ms = time.time_ns() // 1_000_000


def on_checkout_completed(ctx: EventContext) -> Outcome:
    session_obj = ctx.object
    user = resolve_user(ctx, customer_id_of(session_obj), metadata_user_id(session_obj))
    if user is None:
        return "unresolved", f"no user for customer {customer_id_of(session_obj)}"
    subscription_id = session_obj.get("subscription")
    if isinstance(subscription_id, dict):
        subscription_id = subscription_id.get("id")
    if not isinstance(subscription_id, str):
        return "applied", None
    ctx.record.stripe_subscription_id = subscription_id
    if not _subscription_described(ctx.session, subscription_id) and ctx.stripe.configured:
        # The session does not say what was bought; Stripe's subscription does.
        _keep_stripe_answer(ctx, ctx.stripe.retrieve_subscription(subscription_id))
    return refresh(ctx, user, subscription_id)


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
    return resolve_user(ctx, customer_id_of(invoice), invoice_user_id(invoice)), subscription_id


def on_payment_failed(ctx: EventContext) -> Outcome:
    user, subscription_id = _invoice_context(ctx)
    if user is None:
        return "unresolved", f"no user for customer {customer_id_of(ctx.object)}"
    record_failed_payment(ctx.session, user.id, ctx.object, ctx.event["id"], ctx.now)
    outcome = refresh(ctx, user, subscription_id) if subscription_id else ("applied", None)
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


def on_payment_succeeded(ctx: EventContext) -> Outcome:
    user, subscription_id = _invoice_context(ctx)
    if user is None:
        return "unresolved", f"no user for customer {customer_id_of(ctx.object)}"
    # The fold first: the invoice's number locks its series until the commit, so what
    # follows the numbering is kept short (other users' invoices wait on it).
    outcome = refresh(ctx, user, subscription_id) if subscription_id else ("applied", None)
    invoice = record_invoice_payment(
        ctx.session,
        user.id,
        ctx.object,
        ctx.event["id"],
        ctx.now,
        settings=ctx.settings,
        catalog=ctx.catalog,
        gateway=ctx.stripe,
    )
    if invoice is not None:
        notify_invoice_issued(ctx.session, invoice.id)
    return outcome


def on_charge_refunded(ctx: EventContext) -> Outcome:
    charge = ctx.object
    user = resolve_user(ctx, customer_id_of(charge), metadata_user_id(charge))
    if user is None:
        return "unresolved", f"no user for customer {customer_id_of(charge)}"
    record_refunds(
        ctx.session,
        user.id,
        charge,
        ctx.event["id"],
        ctx.now,
        settings=ctx.settings,
        gateway=ctx.stripe,
    )
    return "applied", None


HANDLERS: dict[str, Handler] = {
    "customer.subscription.created": on_subscription,
    "customer.subscription.updated": on_subscription,
    "customer.subscription.deleted": on_subscription,
    "checkout.session.completed": on_checkout_completed,
    "invoice.payment_failed": on_payment_failed,
    "invoice.payment_succeeded": on_payment_succeeded,
    "invoice.paid": on_payment_succeeded,
    "charge.refunded": on_charge_refunded,
}

# Kept events of a customer linked later are applied in this order: what the user bought,
# then what they paid, then what was refunded of it.
APPLY_ORDER = {
    **dict.fromkeys(SNAPSHOT_EVENTS, 0),
    "invoice.payment_failed": 1,
    "invoice.payment_succeeded": 1,
    "invoice.paid": 1,
    "charge.refunded": 2,
}
