"""The only door to Stripe: the official SDK, pointed at `STRIPE_API_BASE`, with timeouts.

Every Stripe failure leaves here as StripeUnavailable, whose message is ours: Stripe's own
text is logged for the operator and never handed to a client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import stripe

from meterbill.config import Settings
from meterbill.errors import StripeNotConfigured, StripeUnavailable

log = logging.getLogger("meterbill.stripe")
T = TypeVar("T")

# Stripe answers 409 `idempotency_key_in_use` while another request with the same key runs;
# the documented remedy is to retry a moment later, when the first one's answer is saved.
_KEY_IN_USE_WAIT = 0.25
_KEY_IN_USE_TRIES = 60


@dataclass(frozen=True)
class StripeAnswer:
    """An object as Stripe answered it, and when (Stripe's clock, from the `Date` header)."""

    object: dict[str, Any]
    at: int


def _answer(obj: Any) -> StripeAnswer:
    at = 0
    response = getattr(obj, "last_response", None)
    date = response.headers.get("date") if response is not None else None
    if date:
        try:
            at = int(parsedate_to_datetime(date).timestamp())
        except (TypeError, ValueError):
            at = 0
    return StripeAnswer(obj.to_dict(), at or int(time.time()))


def _key_in_use(exc: stripe.StripeError) -> bool:
    body: Any = exc.json_body if isinstance(exc.json_body, dict) else {}
    error: Any = body.get("error")
    return (
        exc.http_status == 409
        and isinstance(error, dict)
        and error.get("code") == "idempotency_key_in_use"
    )


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

    def call_once(self, what: str, operation: Callable[[stripe.StripeClient], T], key: str) -> T:
        """Run one Stripe mutation under the idempotency key `key`: a retry with the same key
        (a client retrying, two requests at once) gets Stripe's first answer, never a second
        charge or a second object. While the first request runs, Stripe answers 409
        `idempotency_key_in_use`; wait for its saved answer."""
        client = self.client
        for attempt in range(_KEY_IN_USE_TRIES):
            try:
                return operation(client)
            except stripe.StripeError as exc:
                if _key_in_use(exc) and attempt + 1 < _KEY_IN_USE_TRIES:
                    time.sleep(_KEY_IN_USE_WAIT)
                    continue
                log.warning(
                    "stripe call failed",
                    extra={
                        "operation": what,
                        "stripe_error": type(exc).__name__,
                        "http_status": exc.http_status,
                    },
                )
                raise StripeUnavailable() from exc
        raise StripeUnavailable()  # pragma: no cover (the loop returns or raises)

    def create_customer(self, user_id: str, email: str | None) -> str:
        """The user's Stripe customer: one per user, whoever asks and however often (the
        idempotency key is the user's), so it can be created outside any lock."""
        params: dict[str, Any] = {"metadata": {"user_id": user_id}}
        if email:
            params["email"] = email
        key = f"meterbill-customer-{user_id}"
        customer = self.call_once(
            "customers.create",
            lambda c: c.v1.customers.create(
                params,  # type: ignore[arg-type]
                options={"idempotency_key": key},
            ),
            key,
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
        return [payment.to_dict(for_json=True) for payment in page.data]

    def create_checkout_session(
        self, *, customer_id: str, user_id: str, plan: str, price_id: str, key: str
    ) -> dict[str, Any]:
        """A Checkout Session selling `price_id`; the session's metadata names the user, the
        plan and the price (billing.checkout reads them back when it lists sessions)."""
        base = self.settings.app_base_url.rstrip("/")
        metadata = {"user_id": user_id, "plan": plan}
        session = self.call_once(
            "checkout.sessions.create",
            lambda c: c.v1.checkout.sessions.create(
                {
                    "customer": customer_id,
                    "mode": "subscription",
                    "line_items": [{"price": price_id, "quantity": 1}],
                    "success_url": f"{base}/billing/success?session_id={{CHECKOUT_SESSION_ID}}",
                    "cancel_url": f"{base}/billing/cancel",
                    "client_reference_id": user_id,
                    "metadata": {**metadata, "price": price_id},
                    "subscription_data": {"metadata": metadata},
                },
                options={"idempotency_key": key},
            ),
            key,
        )
        return session.to_dict()

    def list_checkout_sessions(
        self, customer_id: str, status: str | None = None
    ) -> list[dict[str, Any]]:
        """The customer's Checkout Sessions, newest first (the first 100: every checkout
        expires the open ones before it, so the open ones are among the newest)."""
        params: dict[str, Any] = {"customer": customer_id, "limit": 100}
        if status:
            params["status"] = status
        page = self.call(
            "checkout.sessions.list",
            lambda c: c.v1.checkout.sessions.list(params),  # type: ignore[arg-type]
        )
        return [session.to_dict() for session in page.data]

    def retrieve_checkout_session(self, session_id: str) -> dict[str, Any]:
        session = self.call(
            "checkout.sessions.retrieve", lambda c: c.v1.checkout.sessions.retrieve(session_id)
        )
        return session.to_dict()

    def expire_checkout_session(self, session_id: str) -> dict[str, Any]:
        """Expire an open session; returns the session as it ends up. Stripe refuses to
        expire a session that is not open (documented as an error without a code), so a
        refusal is answered by the session itself: `complete` (paid) or `expired`."""
        key = f"meterbill-expire-{session_id}"

        def expire(client: stripe.StripeClient) -> Any:
            try:
                return client.v1.checkout.sessions.expire(
                    session_id, options={"idempotency_key": key}
                )
            except stripe.InvalidRequestError as exc:
                if exc.http_status == 400:
                    return None  # not open (any more): the session says what it is
                raise

        session = self.call_once("checkout.sessions.expire", expire, key)
        if session is None:
            return self.retrieve_checkout_session(session_id)
        return session.to_dict()  # type: ignore[no-any-return]

    def create_portal_session(self, customer_id: str) -> str:
        base = self.settings.app_base_url.rstrip("/")
        # A portal link lives a few minutes: a retry within the same minute gets the same one.
        key = f"meterbill-portal-{customer_id}-{int(time.time()) // 60}"
        session = self.call_once(
            "billing_portal.sessions.create",
            lambda c: c.v1.billing_portal.sessions.create(
                {"customer": customer_id, "return_url": f"{base}/account"},
                options={"idempotency_key": key},
            ),
            key,
        )
        return str(session.url)

    # -- plan changes (billing.plans) -----------------------------------------------------

    def fetch_subscription(self, subscription_id: str) -> StripeAnswer:
        return _answer(
            self.call(
                "subscriptions.retrieve",
                lambda c: c.v1.subscriptions.retrieve(subscription_id),
            )
        )

    def update_subscription(
        self, subscription_id: str, params: dict[str, Any], key: str
    ) -> StripeAnswer:
        return _answer(
            self.call_once(
                "subscriptions.update",
                lambda c: c.v1.subscriptions.update(
                    subscription_id,
                    params,  # type: ignore[arg-type]
                    options={"idempotency_key": key},
                ),
                key,
            )
        )

    def cancel_subscription_now(self, subscription_id: str, key: str) -> StripeAnswer:
        return _answer(
            self.call_once(
                "subscriptions.cancel",
                lambda c: c.v1.subscriptions.cancel(
                    subscription_id, options={"idempotency_key": key}
                ),
                key,
            )
        )

    def retrieve_invoice(self, invoice_id: str) -> dict[str, Any]:
        invoice = self.call("invoices.retrieve", lambda c: c.v1.invoices.retrieve(invoice_id))
        return invoice.to_dict(for_json=True)

    def refund_payment(
        self, payment_intent: str, metadata: dict[str, str], key: str
    ) -> dict[str, Any]:
        """Refund a payment in full (once per key, however often asked)."""
        refund = self.call_once(
            "refunds.create",
            lambda c: c.v1.refunds.create(
                {"payment_intent": payment_intent, "metadata": metadata},
                options={"idempotency_key": key},
            ),
            key,
        )
        return refund.to_dict(for_json=True)

    def retrieve_price(self, price_id: str) -> dict[str, Any]:
        price = self.call("prices.retrieve", lambda c: c.v1.prices.retrieve(price_id))
        return price.to_dict()

    def retrieve_schedule(self, schedule_id: str) -> dict[str, Any]:
        schedule = self.call(
            "subscription_schedules.retrieve",
            lambda c: c.v1.subscription_schedules.retrieve(schedule_id),
        )
        return schedule.to_dict()

    def create_schedule(self, subscription_id: str, key: str) -> dict[str, Any]:
        schedule = self.call_once(
            "subscription_schedules.create",
            lambda c: c.v1.subscription_schedules.create(
                {"from_subscription": subscription_id}, options={"idempotency_key": key}
            ),
            key,
        )
        return schedule.to_dict()

    def update_schedule(self, schedule_id: str, params: dict[str, Any], key: str) -> dict[str, Any]:
        schedule = self.call_once(
            "subscription_schedules.update",
            lambda c: c.v1.subscription_schedules.update(
                schedule_id,
                params,  # type: ignore[arg-type]
                options={"idempotency_key": key},
            ),
            key,
        )
        return schedule.to_dict()

    def release_schedule(self, schedule_id: str) -> dict[str, Any]:
        key = f"meterbill-release-{schedule_id}"
        schedule = self.call_once(
            "subscription_schedules.release",
            lambda c: c.v1.subscription_schedules.release(
                schedule_id, options={"idempotency_key": key}
            ),
            key,
        )
        return schedule.to_dict()

    def retrieve_subscription(self, subscription_id: str) -> dict[str, Any]:
        sub = self.call(
            "subscriptions.retrieve", lambda c: c.v1.subscriptions.retrieve(subscription_id)
        )
        return sub.to_dict(for_json=True)

    def retrieve_customer(self, customer_id: str) -> dict[str, Any]:
        customer = self.call("customers.retrieve", lambda c: c.v1.customers.retrieve(customer_id))
        return customer.to_dict(for_json=True)

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
        return [sub.to_dict(for_json=True) for sub in subscriptions]
