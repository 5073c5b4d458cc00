"""HTTP endpoints of billing: the seed's contract, paths and fields unchanged."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from meterbill.auth.dependencies import CurrentUser, ServicesDep
from meterbill.billing import plans, service
from meterbill.billing.schemas import CheckoutIn, CheckoutOut, PortalOut, StatusOut, WebhookOut
from meterbill.billing.webhooks import apply_stripe_event, parse_stripe_event
from meterbill.errors import (
    AlreadyOnPlan,
    CheckoutAlreadyCompleted,
    CheckoutSuperseded,
    InvalidPayload,
    InvalidPlan,
    InvalidSignature,
    NoPaidSubscription,
    NoStripeCustomer,
    PlanChangePaymentFailed,
    PlanChangeRequired,
    PriceNotConfigured,
    SettlementRequired,
    StripeNotConfigured,
    StripeUnavailable,
    SubscriptionPaused,
    SubscriptionPaymentPending,
    WebhookFailed,
    WebhookNotConfigured,
)
from meterbill.openapi import raises
from meterbill.services import Services

router = APIRouter(prefix="/api/v1/billing", tags=["billing"])


_CHECKOUT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": CheckoutIn.model_json_schema()}},
    }
}


@router.post("/checkout", response_model=CheckoutOut, openapi_extra=_CHECKOUT_BODY)
@raises(
    InvalidPlan,
    AlreadyOnPlan,
    PlanChangeRequired,
    SettlementRequired,
    SubscriptionPaymentPending,
    SubscriptionPaused,
    CheckoutAlreadyCompleted,
    CheckoutSuperseded,
    StripeNotConfigured,
    PriceNotConfigured,
    StripeUnavailable,
)
async def create_checkout(
    request: Request, user: CurrentUser, services: ServicesDep
) -> CheckoutOut:
    """Create a Stripe Checkout session to buy `premium` or `pro` (a first subscription);
    the user's other open sessions are expired, so only one can be paid."""
    plan = await _plan_in(request)
    return await run_in_threadpool(
        service.start_checkout,
        services.db,
        services.settings,
        services.catalog,
        services.gateway,
        user.user_id,
        user.email,
        plan,
        services.now(),
    )


async def _plan_in(request: Request) -> str:
    """The `plan` of a JSON body; anything else is an empty plan (400 invalid_plan)."""
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        body = {}
    plan = body.get("plan") if isinstance(body, dict) else None
    return plan if isinstance(plan, str) else ""


@router.post("/plan", response_model=StatusOut, openapi_extra=_CHECKOUT_BODY)
@raises(
    InvalidPlan,
    AlreadyOnPlan,
    NoPaidSubscription,
    SettlementRequired,
    PlanChangePaymentFailed,
    StripeNotConfigured,
    PriceNotConfigured,
    StripeUnavailable,
)
async def change_plan(request: Request, user: CurrentUser, services: ServicesDep) -> StatusOut:
    """Change the plan of the paid subscription: an upgrade now (prorated, applied once
    paid), a downgrade at the period's end; the plan in effect takes a pending downgrade back."""
    plan = await _plan_in(request)
    await run_in_threadpool(
        plans.change_plan,
        services.db,
        services.settings,
        services.catalog,
        services.gateway,
        user.user_id,
        plan,
        services.now(),
    )
    return service.subscription_status(services.db, user.user_id, services.now())


@router.post("/cancel", response_model=StatusOut)
@raises(NoPaidSubscription, SettlementRequired, StripeNotConfigured, StripeUnavailable)
def cancel_subscription(user: CurrentUser, services: ServicesDep) -> StatusOut:
    """Cancel at the period's end (the plan stays until then)."""
    plans.cancel_at_period_end(
        services.db,
        services.settings,
        services.catalog,
        services.gateway,
        user.user_id,
        services.now(),
    )
    return service.subscription_status(services.db, user.user_id, services.now())


@router.post("/cancel/undo", response_model=StatusOut)
@raises(NoPaidSubscription, SettlementRequired, StripeNotConfigured, StripeUnavailable)
def undo_cancel(user: CurrentUser, services: ServicesDep) -> StatusOut:
    """Take back a cancellation before the period's end."""
    return _undo_cancel(user.user_id, services)


@router.delete("/cancel", response_model=StatusOut)
@raises(NoPaidSubscription, SettlementRequired, StripeNotConfigured, StripeUnavailable)
def delete_cancel(user: CurrentUser, services: ServicesDep) -> StatusOut:
    """Take back a cancellation before the period's end (same as POST /cancel/undo)."""
    return _undo_cancel(user.user_id, services)


def _undo_cancel(user_id: str, services: Services) -> StatusOut:
    plans.undo_cancel(
        services.db,
        services.settings,
        services.catalog,
        services.gateway,
        user_id,
        services.now(),
    )
    return service.subscription_status(services.db, user_id, services.now())


@router.post("/portal", response_model=PortalOut)
@raises(NoStripeCustomer, StripeNotConfigured, StripeUnavailable)
def create_portal(user: CurrentUser, services: ServicesDep) -> PortalOut:
    """Create a Stripe customer portal session to manage the subscription."""
    return PortalOut(portal_url=service.open_portal(services.db, services.gateway, user.user_id))


@router.get("/status", response_model=StatusOut)
def billing_status(user: CurrentUser, services: ServicesDep) -> StatusOut:
    """The user's subscription; `plan` is the plan in effect now."""
    return service.subscription_status(services.db, user.user_id, services.now())


_WEBHOOK_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
        "description": "A Stripe event, exactly as Stripe sent it (signed bytes).",
    },
    "parameters": [
        {
            "name": "Stripe-Signature",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "Stripe's `t=…,v1=…` signature of the body.",
        }
    ],
}


@router.post("/webhook", response_model=WebhookOut, openapi_extra=_WEBHOOK_BODY)
@raises(InvalidSignature, InvalidPayload, WebhookNotConfigured, WebhookFailed)
async def stripe_webhook(request: Request, services: ServicesDep) -> WebhookOut:
    """Receive a Stripe event (signature verified); each event id is applied once. A
    document it issues is rendered by the worker (never in this process)."""
    payload = await request.body()
    event = parse_stripe_event(services.settings, payload, request.headers.get("stripe-signature"))
    outcome = await run_in_threadpool(
        apply_stripe_event,
        services.db,
        services.settings,
        services.catalog,
        services.gateway,
        event,
        services.now(),
    )
    return WebhookOut(outcome=outcome)
