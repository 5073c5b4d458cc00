"""The only door to Stripe: the official SDK, pointed at `STRIPE_API_BASE`, with timeouts.

Every Stripe failure leaves here as StripeUnavailable, whose message is ours: Stripe's own
text is logged for the operator and never handed to a client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import stripe

from meterbill.config import Settings
from meterbill.errors import StripeNotConfigured, StripeUnavailable

log = logging.getLogger("meterbill.stripe")
T = TypeVar("T")


class StripeGateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: stripe.StripeClient | None = None

    @property
    def configured(self) -> bool:
        return bool(self.settings.stripe_secret_key)

    @property
    def client(self) -> stripe.StripeClient:
        if not self.configured:
            raise StripeNotConfigured()
        if self._client is None:
            self._client = stripe.StripeClient(
                self.settings.stripe_secret_key,
                base_addresses={"api": self.settings.stripe_api_base},
                max_network_retries=self.settings.stripe_max_retries,
                http_client=stripe.RequestsClient(timeout=self.settings.stripe_timeout_seconds),
            )
        return self._client

    def call(self, what: str, operation: Callable[[stripe.StripeClient], T]) -> T:
        """Run one SDK call; any Stripe or network failure becomes StripeUnavailable."""
        client = self.client
        try:
            return operation(client)
        except stripe.StripeError as exc:
            log.warning(
                "stripe call failed",
                extra={
                    "operation": what,
                    "stripe_error": type(exc).__name__,
                    "http_status": exc.http_status,
                },
            )
            raise StripeUnavailable() from exc

    def create_customer(self, user_id: str, email: str | None) -> str:
        params: dict[str, Any] = {"metadata": {"user_id": user_id}}
        if email:
            params["email"] = email
        customer = self.call(
            "customers.create",
            lambda c: c.v1.customers.create(
                params,  # type: ignore[arg-type]
                options={"idempotency_key": f"meterbill-customer-{user_id}"},
            ),
        )
        return str(customer.id)

    def list_invoice_payments(
        self, *, invoice_id: str | None = None, payment_intent: str | None = None
    ) -> list[dict[str, Any]]:
        """The payments of an invoice, or the invoice payments of a payment intent (today's
        API no longer puts them in invoice events: `payments` is only includable)."""
        params: dict[str, Any] = {"limit": 10}
        if invoice_id:
            params["invoice"] = invoice_id
        if payment_intent:
            params["payment"] = {"type": "payment_intent", "payment_intent": payment_intent}
        page = self.call(
            "invoice_payments.list",
            lambda c: c.v1.invoice_payments.list(params),  # type: ignore[arg-type]
        )
        return [payment.to_dict() for payment in page.data]

    def create_checkout_session(
        self, *, customer_id: str, user_id: str, plan: str, price_id: str
    ) -> tuple[str, str]:
        base = self.settings.app_base_url.rstrip("/")
        metadata = {"user_id": user_id, "plan": plan}
        session = self.call(
            "checkout.sessions.create",
            lambda c: c.v1.checkout.sessions.create(
                {
                    "customer": customer_id,
                    "mode": "subscription",
                    "line_items": [{"price": price_id, "quantity": 1}],
                    "success_url": f"{base}/billing/success?session_id={{CHECKOUT_SESSION_ID}}",
                    "cancel_url": f"{base}/billing/cancel",
                    "client_reference_id": user_id,
                    "metadata": metadata,
                    "subscription_data": {"metadata": metadata},
                }
            ),
        )
        return str(session.url), str(session.id)

    def create_portal_session(self, customer_id: str) -> str:
        base = self.settings.app_base_url.rstrip("/")
        session = self.call(
            "billing_portal.sessions.create",
            lambda c: c.v1.billing_portal.sessions.create(
                {"customer": customer_id, "return_url": f"{base}/account"}
            ),
        )
        return str(session.url)

    def retrieve_price(self, price_id: str) -> dict[str, Any]:
        price = self.call("prices.retrieve", lambda c: c.v1.prices.retrieve(price_id))
        return price.to_dict()

    def retrieve_subscription(self, subscription_id: str) -> dict[str, Any]:
        sub = self.call(
            "subscriptions.retrieve", lambda c: c.v1.subscriptions.retrieve(subscription_id)
        )
        return sub.to_dict()

    def retrieve_customer(self, customer_id: str) -> dict[str, Any]:
        customer = self.call("customers.retrieve", lambda c: c.v1.customers.retrieve(customer_id))
        return customer.to_dict()

    def list_subscriptions(self, customer_id: str) -> list[dict[str, Any]]:
        """Every subscription of the customer, canceled ones included."""
        subscriptions = self.call(
            "subscriptions.list",
            lambda c: list(
                c.v1.subscriptions.list(
                    {"customer": customer_id, "status": "all", "limit": 100}
                ).auto_paging_iter()
            ),
        )
        return [sub.to_dict() for sub in subscriptions]
