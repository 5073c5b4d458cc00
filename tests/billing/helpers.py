"""Small steps shared by the billing tests."""

from __future__ import annotations

import secrets
import time
from typing import Any

from sqlalchemy import select

from meterbill.auth.service import lock_user
from meterbill.billing.models import BillingEvent
from meterbill.invoicing.models import Invoice, Transaction
from tests.conftest import Service


def user_with_customer(service: Service, user_id: str = "user-1") -> str:
    """A user whose Stripe customer is known, as after a checkout."""
    customer = f"cus_{secrets.token_hex(6)}"
    with service.db.transaction() as session:
        lock_user(session, user_id).stripe_customer_id = customer
    return customer


def status(service: Service, user_id: str = "user-1", **claims: Any) -> dict[str, Any]:
    headers = service.auth(user_id, **claims)
    response = service.client.get("/api/v1/billing/status", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def events(service: Service) -> list[BillingEvent]:
    with service.db.reading() as session:
        return list(session.scalars(select(BillingEvent).order_by(BillingEvent.id)))


def invoices(service: Service) -> list[Invoice]:
    with service.db.reading() as session:
        return list(session.scalars(select(Invoice).order_by(Invoice.id)))


def transactions(service: Service) -> list[Transaction]:
    with service.db.reading() as session:
        return list(session.scalars(select(Transaction).order_by(Transaction.id)))


def ts(offset: int = 0) -> int:
    return int(time.time()) + offset
