"""Stripe reads for applying an event, made outside the database's write transaction.

An event is applied inside one write transaction (on SQLite, a lock on the whole file),
where no network call may happen: a slow Stripe would stall every writer. The handlers ask
`StripeReads` — a gateway that only answers from what was fetched before — and when an
answer is missing it raises `StripeReadNeeded`, which rolls the transaction back. The
caller makes the read with no transaction open, then applies the event again, the answer
now at hand (`read_then_write`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, NoReturn, TypeVar

import stripe

from meterbill.billing.gateway import StripeGateway
from meterbill.errors import MeterbillError

T = TypeVar("T")
MAX_ROUNDS = 8  # each round fetches at least one new answer; a handler needs a few at most


class StripeReadNeeded(Exception):
    """A handler needs a Stripe answer not fetched yet (never a MeterbillError, so that no
    handler's `except MeterbillError` swallows it)."""

    def __init__(self, key: Hashable, read: Callable[[], Any]) -> None:
        super().__init__(f"stripe read needed: {key}")
        self.key = key
        self.read = read


class StripeReads(StripeGateway):
    """The gateway's reads, served from answers fetched outside the transaction."""

    def __init__(self, gateway: StripeGateway) -> None:
        super().__init__(gateway.settings)
        self._gateway = gateway
        self._answers: dict[Hashable, Any] = {}

    @property
    def configured(self) -> bool:
        return self._gateway.configured

    @property
    def client(self) -> NoReturn:
        raise RuntimeError("no direct Stripe call while an event is applied")

    def fetch(self, need: StripeReadNeeded) -> None:
        """Make the read now (no transaction may be open); a Stripe failure is kept as the
        answer, raised again where the handler asks for it."""
        try:
            self._answers[need.key] = need.read()
        except MeterbillError as exc:
            self._answers[need.key] = exc

    def _answer(self, key: Hashable, read: Callable[[], T]) -> T:
        if key not in self._answers:
            raise StripeReadNeeded(key, read)
        answer = self._answers[key]
        if isinstance(answer, MeterbillError):
            raise answer
        return answer  # type: ignore[no-any-return]

    def retrieve_customer(self, customer_id: str) -> dict[str, Any]:
        return self._answer(
            ("customer", customer_id), lambda: self._gateway.retrieve_customer(customer_id)
        )

    def retrieve_subscription(self, subscription_id: str) -> dict[str, Any]:
        return self._answer(
            ("subscription", subscription_id),
            lambda: self._gateway.retrieve_subscription(subscription_id),
        )

    def list_subscriptions(self, customer_id: str) -> list[dict[str, Any]]:
        return self._answer(
            ("subscriptions", customer_id), lambda: self._gateway.list_subscriptions(customer_id)
        )

    def list_invoice_payments(
        self, *, invoice_id: str | None = None, payment_intent: str | None = None
    ) -> list[dict[str, Any]]:
        return self._answer(
            ("invoice_payments", invoice_id, payment_intent),
            lambda: self._gateway.list_invoice_payments(
                invoice_id=invoice_id, payment_intent=payment_intent
            ),
        )

    def call(self, what: str, operation: Callable[[stripe.StripeClient], T]) -> T:
        raise RuntimeError(f"no Stripe call ({what}) while an event is applied")


def read_then_write(gateway: StripeGateway, apply: Callable[[StripeReads], T]) -> T:
    """Run `apply` (which opens and commits its own write transaction) with a gateway that
    never calls Stripe; each read it lacks is made between two attempts, outside any
    transaction."""
    reads = StripeReads(gateway)
    for _ in range(MAX_ROUNDS):
        try:
            return apply(reads)
        except StripeReadNeeded as need:
            reads.fetch(need)
    raise RuntimeError("an event needed more Stripe reads than any handler makes")
