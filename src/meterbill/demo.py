"""`meterbill demo`: a realistic dataset to look at — users in French and English, free,
premium and pro plans, a few failed payments (some still in their grace period, some past
it), a canceled subscription, this month's usage up to and past the limits, and invoices.

Subscriptions are made the way production makes them: Stripe-shaped events applied through
the webhook path (never sent to Stripe). Ids are fixed by the seed, so loading twice adds
nothing the second time.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from meterbill.auth.service import lock_user
from meterbill.billing.gateway import StripeGateway
from meterbill.billing.models import BillingEvent, Subscription
from meterbill.billing.webhooks import apply_stripe_event
from meterbill.config import Settings
from meterbill.db import Database, utcnow
from meterbill.invoicing.models import Invoice
from meterbill.invoicing.parties import missing_seller_fields
from meterbill.jobs.models import Job
from meterbill.sandbox import claim_for_demo, sandboxed
from meterbill.usage.recording import UsageEvent, record_usage

Step = Callable[[str, int], Callable[..., None]]
PRICES = {"premium": 900, "pro": 2900}
FIRST_NAMES = [
    "camille",
    "lea",
    "hugo",
    "lucas",
    "chloe",
    "louis",
    "emma",
    "jules",
    "alice",
    "adam",
    "ines",
    "paul",
]


def _profile(rng: random.Random) -> tuple[str | None, str]:
    """(plan or None for free, how the subscription goes)."""
    roll = rng.random()
    if roll < 0.45:
        return None, "free"
    if roll < 0.70:
        return "premium", "active"
    if roll < 0.82:
        return "pro", "active"
    if roll < 0.90:
        return "premium", "in_grace"
    if roll < 0.95:
        return "pro", "grace_over"
    return "premium", "canceled"


def _event(event_id: str, type_: str, obj: dict[str, Any], created: int) -> dict[str, Any]:
    return {"id": event_id, "object": "event", "type": type_, "created": created,
            "data": {"object": obj}}  # fmt: skip


def _subscription(
    sub_id: str, customer: str, user_id: str, price: str, status: str, start: int, end: int
) -> dict[str, Any]:
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "created": start,
        "start_date": start,
        "metadata": {"user_id": user_id},
        "items": {"data": [{"price": {"id": price}, "current_period_end": end}]},
    }


def _invoice(
    invoice_id: str, customer: str, user_id: str, sub_id: str, amount: int, at: int, paid: bool
) -> dict[str, Any]:
    return {
        "id": invoice_id,
        "object": "invoice",
        "customer": customer,
        "currency": "eur",
        "created": at,
        "amount_due": amount,
        "amount_paid": amount if paid else 0,
        "total": amount,
        "attempt_count": 1,
        "metadata": {"user_id": user_id},
        "parent": {"subscription_details": {"subscription": sub_id}},
        "lines": {"data": [{"amount": amount, "period": {"start": at, "end": at + 30 * 86400}}]},
    }


def _user_events(
    rng: random.Random, user_id: str, plan: str, story: str, price: str, now: datetime
) -> list[dict[str, Any]]:
    customer, sub_id = f"cus_demo_{user_id}", f"sub_demo_{user_id}"
    start = int((now - timedelta(days=rng.randint(12, 80))).timestamp())
    period_end = start + 30 * 86400
    while period_end < now.timestamp():
        period_end += 30 * 86400
    amount = PRICES[plan]
    events = [
        _event(
            f"evt_demo_{user_id}_created",
            "customer.subscription.created",
            _subscription(sub_id, customer, user_id, price, "active", start, period_end),
            start,
        ),
        _event(
            f"evt_demo_{user_id}_paid",
            "invoice.payment_succeeded",
            _invoice(f"in_demo_{user_id}_1", customer, user_id, sub_id, amount, start, True),
            start + 5,
        ),
    ]
    if story in ("in_grace", "grace_over"):
        failed_at = int((now - timedelta(days=1 if story == "in_grace" else 6)).timestamp())
        events.append(
            _event(
                f"evt_demo_{user_id}_failed",
                "invoice.payment_failed",
                _invoice(
                    f"in_demo_{user_id}_2", customer, user_id, sub_id, amount, failed_at, False
                ),
                failed_at,
            )
        )
    if story == "canceled":
        ended = int((now - timedelta(days=2)).timestamp())
        canceled = _subscription(sub_id, customer, user_id, price, "canceled", start, period_end)
        events.append(
            _event(f"evt_demo_{user_id}_deleted", "customer.subscription.deleted", canceled, ended)
        )
    return events


def _usage(
    rng: random.Random, user_id: str, limits: dict[str, int], now: datetime
) -> list[UsageEvent]:
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    seconds = max(int((now - month_start).total_seconds()), 1)
    events = []
    for metric, limit in limits.items():
        target = int(limit * rng.choice([0.1, 0.4, 0.7, 0.85, 1.05]))
        chunks = rng.randint(5, 25)
        for n in range(chunks):
            events.append(
                UsageEvent(
                    id=f"demo-{user_id}-{metric}-{n}",
                    user_id=user_id,
                    metric=metric,
                    value=max(target // chunks, 1),
                    timestamp=month_start + timedelta(seconds=rng.randrange(seconds)),
                    endpoint="/v1/generate" if metric == "tokens" else "/v1/search",
                )
            )
    return events


DEMO_SELLER = {
    "seller_name": "Démo meterbill SAS",
    "seller_address": "1 place de la Démo;75001 Paris",
    "seller_siren": "000000000",
    "seller_vat_number": "FR00000000000",
}


def load_demo(
    db: Database, settings: Settings, *, users: int, seed: int, step: Step
) -> dict[str, int]:
    """Load the dataset; returns what the database holds afterwards.

    Only into a database made for it: NotADemoDatabase when it holds real users or
    invoices. Nothing leaves meterbill: no Stripe, no email, no outgoing webhook."""
    claim_for_demo(db, utcnow())
    rng = random.Random(seed)
    settings = sandboxed(settings).model_copy(
        update={
            "stripe_price_premium": settings.stripe_price_premium or "price_demo_premium",
            "stripe_price_pro": settings.stripe_price_pro or "price_demo_pro",
            # Invoices need a seller's identity: the demo's own, unless one is configured.
            **({} if not missing_seller_fields(settings) else DEMO_SELLER),
        }
    )
    catalog = settings.catalog()
    gateway = StripeGateway(settings)
    now = utcnow().astimezone(UTC)
    advance = step("users and subscriptions", users)
    usage: list[UsageEvent] = []
    for i in range(1, users + 1):
        user_id = f"demo-{i:03d}"
        name = FIRST_NAMES[i % len(FIRST_NAMES)]
        with db.transaction() as session:
            user = lock_user(session, user_id, f"{name}.{i:03d}@example.com")
            user.locale = "en" if i % 3 == 0 else "fr"
        plan, story = _profile(rng)
        if plan is not None:
            price = catalog.plan(plan).stripe_price or ""
            for event in _user_events(rng, user_id, plan, story, price, now):
                apply_stripe_event(db, settings, catalog, gateway, event, now)
        effective = plan if story in ("active", "in_grace") else "free"
        usage.extend(_usage(rng, user_id, catalog.plan(effective or "free").limits, now))
        advance()
    advance = step("usage events", len(usage))
    for start in range(0, len(usage), 500):
        batch = usage[start : start + 500]
        with db.transaction() as session:
            record_usage(session, batch, now)
        advance(len(batch))
    with db.reading() as session:
        return {
            "users": users,
            "subscriptions": session.scalar(select(func.count()).select_from(Subscription)) or 0,
            "stripe events": session.scalar(select(func.count()).select_from(BillingEvent)) or 0,
            "usage events": len(usage),
            "invoices": session.scalar(select(func.count()).select_from(Invoice)) or 0,
            "jobs queued": session.scalar(
                select(func.count()).select_from(Job).where(Job.status == "queued")
            )
            or 0,
        }
