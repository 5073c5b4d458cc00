"""Reading Stripe objects in both the old shapes (API 2017-08-15, what localstripe sends)
and today's (since 2025-03-31.basil: periods on subscription items, an invoice's
subscription under `parent.subscription_details`, payments under `payments`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]


def _dict(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def _id(value: Any) -> str | None:
    """An id, whether Stripe sent the id itself or the expanded object."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return datetime.fromtimestamp(int(value), tz=UTC)
    return None


def _items(obj: Obj) -> list[Obj]:
    data = _dict(obj.get("items")).get("data")
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


@dataclass(frozen=True)
class SubscriptionSnapshot:
    id: str
    customer_id: str | None
    status: str
    price_id: str | None
    current_period_end: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    user_id: str | None
    cancel_at_period_end: bool = False
    cancel_at: datetime | None = None
    schedule_id: str | None = None


def read_subscription(obj: Obj) -> SubscriptionSnapshot | None:
    sub_id = _id(obj.get("id"))
    if not sub_id or not sub_id.startswith("sub"):
        return None
    items = _items(obj)
    first = items[0] if items else {}
    price_id = _id(first.get("price")) or _id(first.get("plan")) or _id(obj.get("plan"))
    period_end = obj.get("current_period_end") or first.get("current_period_end")
    metadata = _dict(obj.get("metadata"))
    user_id = metadata.get("user_id")
    return SubscriptionSnapshot(
        id=sub_id,
        customer_id=_id(obj.get("customer")),
        status=str(obj.get("status") or "active"),
        price_id=price_id,
        current_period_end=_timestamp(period_end),
        started_at=_timestamp(obj.get("start_date") or obj.get("created")),
        ended_at=_timestamp(obj.get("ended_at") or obj.get("canceled_at")),
        user_id=str(user_id) if user_id else None,
        cancel_at_period_end=obj.get("cancel_at_period_end") is True,
        cancel_at=_timestamp(obj.get("cancel_at")),
        schedule_id=_id(obj.get("schedule")),
    )


def invoice_subscription_id(invoice: Obj) -> str | None:
    details = _dict(_dict(invoice.get("parent")).get("subscription_details"))
    return _id(details.get("subscription")) or _id(invoice.get("subscription"))


def invoice_user_id(invoice: Obj) -> str | None:
    """The user meterbill named in the metadata of the invoice, or of the subscription it
    bills (today's shape copies it to `parent.subscription_details.metadata`)."""
    details = _dict(_dict(invoice.get("parent")).get("subscription_details"))
    claimed = metadata_user_id(invoice) or _dict(details.get("metadata")).get("user_id")
    return str(claimed) if claimed else None


def invoice_period_end(invoice: Obj) -> datetime | None:
    """The end of the service period the invoice pays for (its latest line's period)."""
    lines = _dict(invoice.get("lines")).get("data")
    ends = [
        _dict(line.get("period")).get("end")
        for line in (lines if isinstance(lines, list) else [])
        if isinstance(line, dict)
    ]
    stamps = [stamp for stamp in map(_timestamp, ends) if stamp]
    return max(stamps) if stamps else None


def invoice_payment_intent(invoice: Obj) -> str | None:
    direct = _id(invoice.get("payment_intent"))
    if direct:
        return direct
    payments = _dict(invoice.get("payments")).get("data")
    for payment in payments if isinstance(payments, list) else []:
        inner = _dict(_dict(payment).get("payment"))
        intent = _id(inner.get("payment_intent"))
        if intent:
            return intent
    return None


def customer_id_of(obj: Obj) -> str | None:
    return _id(obj.get("customer"))


def metadata_user_id(obj: Obj) -> str | None:
    value = _dict(obj.get("metadata")).get("user_id") or obj.get("client_reference_id")
    return str(value) if value else None


def created_at(obj: Obj) -> datetime | None:
    return _timestamp(obj.get("created"))
