"""Stripe event payloads in today's shapes (API version 2026-10-28), built from Stripe's API
reference for the events localstripe never emits (`checkout.session.completed`,
`customer.subscription.updated`, `invoice.paid`, `charge.refunded`) and for the
current-version variants of those it does (periods on subscription items; an invoice's
subscription under `parent.subscription_details`; payments under `payments`)."""

from __future__ import annotations

import secrets
import time
from typing import Any

API_VERSION = "2026-10-28.clover"


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def event(
    type_: str, obj: dict[str, Any], created: int | None = None, event_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": event_id or _id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": created if created is not None else int(time.time()),
        "data": {"object": obj, "previous_attributes": {}},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
    }


def subscription(
    sub_id: str,
    customer: str,
    price: str,
    status: str = "active",
    *,
    created: int | None = None,
    period_end: int | None = None,
    user_id: str | None = None,
    amount: int = 900,
) -> dict[str, Any]:
    created = created or int(time.time())
    period_end = period_end or created + 30 * 86400
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "created": created,
        "start_date": created,
        "cancel_at_period_end": False,
        "canceled_at": created if status == "canceled" else None,
        "ended_at": created if status == "canceled" else None,
        "currency": "eur",
        "metadata": {"user_id": user_id} if user_id else {},
        "items": {
            "object": "list",
            "data": [
                {
                    "id": _id("si"),
                    "object": "subscription_item",
                    "current_period_start": period_end - 30 * 86400,
                    "current_period_end": period_end,
                    "quantity": 1,
                    "subscription": sub_id,
                    "price": {
                        "id": price,
                        "object": "price",
                        "active": True,
                        "currency": "eur",
                        "unit_amount": amount,
                        "recurring": {"interval": "month", "interval_count": 1},
                        "product": "prod_test",
                        "type": "recurring",
                    },
                }
            ],
            "has_more": False,
        },
        "latest_invoice": None,
    }


def invoice(
    invoice_id: str,
    customer: str,
    sub_id: str | None,
    *,
    amount: int = 900,
    paid: bool = True,
    created: int | None = None,
    period_end: int | None = None,
    price: str = "price_premium_test",
    payment_intent: str | None = None,
) -> dict[str, Any]:
    created = created or int(time.time())
    period_end = period_end or created + 30 * 86400
    parent = (
        {
            "type": "subscription_details",
            "subscription_details": {"subscription": sub_id, "metadata": {}},
        }
        if sub_id
        else None
    )
    return {
        "id": invoice_id,
        "object": "invoice",
        "customer": customer,
        "customer_email": "buyer@example.com",
        "customer_name": "Buyer SAS",
        "currency": "eur",
        "created": created,
        "status": "paid" if paid else "open",
        "amount_due": amount,
        "amount_paid": amount if paid else 0,
        "amount_remaining": 0 if paid else amount,
        "attempt_count": 1,
        "billing_reason": "subscription_cycle",
        "subtotal": amount,
        "total": amount,
        "total_taxes": [],
        "parent": parent,
        "lines": {
            "object": "list",
            "data": [
                {
                    "id": _id("il"),
                    "object": "line_item",
                    "amount": amount,
                    "currency": "eur",
                    "description": "1 × Premium (at €9.00 / month)",
                    "quantity": 1,
                    "period": {"start": period_end - 30 * 86400, "end": period_end},
                    "pricing": {
                        "type": "price_details",
                        "price_details": {"price": price, "product": "prod_test"},
                        "unit_amount_decimal": str(amount),
                    },
                    "parent": {
                        "type": "subscription_item_details",
                        "subscription_item_details": {"subscription": sub_id},
                    },
                }
            ],
            "has_more": False,
        },
        "payments": {
            "object": "list",
            "data": [
                {
                    "object": "invoice_payment",
                    "status": "paid" if paid else "open",
                    "payment": {
                        "type": "payment_intent",
                        "payment_intent": payment_intent or _id("pi"),
                    },
                }
            ],
        },
    }


def checkout_session(customer: str, sub_id: str, user_id: str, plan: str) -> dict[str, Any]:
    return {
        "id": _id("cs_test"),
        "object": "checkout.session",
        "mode": "subscription",
        "status": "complete",
        "payment_status": "paid",
        "customer": customer,
        "subscription": sub_id,
        "client_reference_id": user_id,
        "metadata": {"user_id": user_id, "plan": plan},
        "created": int(time.time()),
    }


def charge_refunded(
    customer: str, payment_intent: str, amount: int, refunds: list[tuple[str, int]]
) -> dict[str, Any]:
    refunded = sum(value for _, value in refunds)
    return {
        "id": _id("ch"),
        "object": "charge",
        "customer": customer,
        "amount": amount,
        "amount_refunded": refunded,
        "currency": "eur",
        "payment_intent": payment_intent,
        "refunded": refunded >= amount,
        "refunds": {
            "object": "list",
            "data": [
                {
                    "id": rid,
                    "object": "refund",
                    "amount": value,
                    "currency": "eur",
                    "status": "succeeded",
                    "payment_intent": payment_intent,
                }
                for rid, value in refunds
            ],
        },
    }
