"""The plans on sale, as a client or the CLI sees them: names, Stripe prices (read from
Stripe when it is configured), limits per metric and what happens at a limit."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from meterbill.auth.dependencies import ServicesDep
from meterbill.billing.gateway import StripeGateway
from meterbill.config import Catalog
from meterbill.errors import StripeNotConfigured, StripeUnavailable

log = logging.getLogger("meterbill.catalog")
PRICE_CACHE_SECONDS = 300.0


class PriceOut(BaseModel):
    amount: int = Field(description="Price per interval, in cents")
    currency: str = Field(description="ISO 4217, lower case as Stripe gives it")
    interval: str | None = Field(None, description="month, year… (None: one-off)")


class MeterOut(BaseModel):
    name: str
    aggregation: str = Field(description="How a month's events add up: sum, count or max")


class PlanOut(BaseModel):
    name: str
    stripe_price: str | None = Field(description="The Stripe price id sold at checkout")
    price: PriceOut | None = Field(
        description="Read from Stripe; None for free plans, or when Stripe is not configured "
        "or does not answer"
    )
    limits: dict[str, int | None] = Field(
        description="Monthly limit per metric; None means no limit"
    )
    on_limit: str = Field(description="block: refuse past the limit (429); allow: count on")
    alert_ratio: float = Field(description="Share of a limit that raises soft_limit_warning")
    vat_rate_bp: int = Field(description="VAT rate in basis points (2000 = 20 %)")


class PlansOut(BaseModel):
    plans: list[PlanOut]
    metrics: list[MeterOut]


class PriceCache:
    """Stripe prices for a few minutes: the plans list is read often and prices rarely change."""

    def __init__(self, ttl: float = PRICE_CACHE_SECONDS) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._prices: dict[str, tuple[float, PriceOut]] = {}

    def get(self, gateway: StripeGateway, price_id: str) -> PriceOut | None:
        with self._lock:
            cached = self._prices.get(price_id)
        if cached and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        try:
            price = _price_of(gateway.retrieve_price(price_id))
        except (StripeNotConfigured, StripeUnavailable):
            return None
        if price is not None:
            with self._lock:
                self._prices[price_id] = (time.monotonic(), price)
        return price


def _price_of(stripe_price: dict[str, Any]) -> PriceOut | None:
    amount = stripe_price.get("unit_amount")
    if not isinstance(amount, int):
        return None
    recurring = stripe_price.get("recurring") or {}
    return PriceOut(
        amount=amount,
        currency=str(stripe_price.get("currency", "")),
        interval=recurring.get("interval"),
    )


def list_plans(
    catalog: Catalog, gateway: StripeGateway | None, prices: PriceCache | None = None
) -> PlansOut:
    """Every plan of the catalog; prices come from Stripe when a gateway is configured."""
    cache = prices or PriceCache()
    plans = []
    for plan in catalog.plans.values():
        price = None
        if plan.stripe_price and gateway is not None and gateway.configured:
            price = cache.get(gateway, plan.stripe_price)
        plans.append(
            PlanOut(
                name=plan.name,
                stripe_price=plan.stripe_price,
                price=price,
                limits={name: plan.limit(name) for name in [*catalog.meters, *plan.limits]},
                on_limit=plan.on_limit,
                alert_ratio=plan.alert_ratio,
                vat_rate_bp=plan.vat_rate_bp,
            )
        )
    meters = [MeterOut(name=m.name, aggregation=m.aggregation) for m in catalog.meters.values()]
    return PlansOut(plans=plans, metrics=meters)


router = APIRouter(prefix="/api/v1/billing", tags=["billing"])
_PRICES = PriceCache()


@router.get("/plans", response_model=PlansOut)
def get_plans(services: ServicesDep) -> PlansOut:
    """The plans on sale (public, like a pricing page): prices from Stripe when configured,
    the monthly limit of each metric (None: no limit) and what happens at a limit."""
    return list_plans(services.catalog, services.gateway, _PRICES)
