"""Small steps shared by the invoicing tests."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select

from meterbill.auth.service import lock_user
from meterbill.invoicing.models import Invoice, InvoiceLine, Transaction
from tests.conftest import Service


def customer_of(service: Service, user_id: str = "user-1", customer: str | None = None) -> str:
    """A user whose Stripe customer is known, as after a checkout."""
    customer = customer or f"cus_{secrets.token_hex(6)}"
    with service.db.transaction() as session:
        lock_user(session, user_id, f"{user_id}@example.com").stripe_customer_id = customer
    return customer


def documents(service: Service, kind: str | None = None) -> list[Invoice]:
    with service.db.reading() as session:
        query = select(Invoice).order_by(Invoice.id)
        if kind:
            query = query.where(Invoice.kind == kind)
        return list(session.scalars(query))


def lines(service: Service, document: Invoice) -> list[InvoiceLine]:
    with service.db.reading() as session:
        return list(
            session.scalars(
                select(InvoiceLine)
                .where(InvoiceLine.invoice_id == document.id)
                .order_by(InvoiceLine.position)
            )
        )


def ledger(service: Service) -> list[Transaction]:
    with service.db.reading() as session:
        return list(session.scalars(select(Transaction).order_by(Transaction.id)))


def posted(service: Service, event: dict[str, Any]) -> str:
    response = service.post_event(event)
    assert response.status_code == 200, response.text
    return str(response.json()["outcome"])


def invoice_json(service: Service, number: str, user_id: str = "user-1") -> dict[str, Any]:
    response = service.client.get(
        f"/api/v1/billing/invoices/{number}", headers=service.auth(user_id)
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]
