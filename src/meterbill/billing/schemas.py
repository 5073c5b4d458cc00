"""Request and response bodies of the billing endpoints (the seed's fields)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class CheckoutIn(BaseModel):
    plan: str = ""


class CheckoutOut(BaseModel):
    checkout_url: str
    session_id: str
    plan: str
    publishable_key: str


class PortalOut(BaseModel):
    portal_url: str


class StatusOut(BaseModel):
    plan: str
    status: str
    stripe_customer_id: str | None = None
    stripe_subscription_id: str | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    current_period_end: datetime | None = None
    grace_period_end: datetime | None = None
    # What happens at the period's end: the subscription stops, or moves to a cheaper plan.
    cancel_at_period_end: bool = False
    cancel_at: datetime | None = None
    pending_plan: str | None = None
    pending_plan_at: datetime | None = None


class PlanIn(BaseModel):
    plan: str = ""


class WebhookOut(BaseModel):
    status: str = "ok"
    outcome: str
