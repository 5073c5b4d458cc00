"""Stripe webhooks: verified, recorded once, and applied in the same transaction.

Stripe is read before that transaction, never inside it (billing.stripe_reads). An event
nobody could be found for (`unresolved`) is kept and applied once its customer is linked
to a user: by the event that makes the link, by its redelivery, or by the worker
(`apply_kept_events`)."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

import stripe
from sqlalchemy import case, select
from sqlalchemy.orm import Session

from meterbill.auth.models import User
from meterbill.billing.dispatch import APPLY_ORDER, HANDLERS
from meterbill.billing.duplicates import cancel_duplicate_subscriptions
from meterbill.billing.event_context import DUPLICATES_FOUND, EventContext
from meterbill.billing.gateway import StripeGateway
from meterbill.billing.models import BillingEvent
from meterbill.billing.stripe_objects import customer_id_of
from meterbill.billing.stripe_reads import StripeReads, read_then_write
from meterbill.config import Catalog, Settings
from meterbill.db import Database, insert_for
from meterbill.errors import (
    InvalidPayload,
    InvalidSignature,
    WebhookFailed,
    WebhookNotConfigured,
)
from meterbill.jobs.queue import write_jobs_at_commit

log = logging.getLogger("meterbill.webhooks")
SIGNATURE_TOLERANCE_SECONDS = 300


def parse_stripe_event(settings: Settings, payload: bytes, signature: str | None) -> dict[str, Any]:
    """The event in `payload`, once its `Stripe-Signature` is verified by Stripe's library.

    With no webhook secret configured, events are refused (503) unless the operator has
    opted into unsigned events for local development.
    """
    if settings.stripe_webhook_secret:
        try:
            stripe.WebhookSignature.verify_header(
                payload.decode("utf-8"),
                signature or "",
                settings.stripe_webhook_secret,
                SIGNATURE_TOLERANCE_SECONDS,
            )
        except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
            raise InvalidSignature() from exc
    elif not settings.insecure_webhooks:
        raise WebhookNotConfigured()
    try:
        event = json.loads(payload)
    except ValueError as exc:
        raise InvalidPayload() from exc
    if not (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and isinstance(event.get("type"), str)
        and isinstance(event.get("data"), dict)
        and isinstance(event["data"].get("object"), dict)
        and "\x00" not in event["id"] + event["type"]
    ):
        raise InvalidPayload()
    return event


def apply_stripe_event(
    db: Database,
    settings: Settings,
    catalog: Catalog,
    gateway: StripeGateway,
    event: dict[str, Any],
    now: datetime,
) -> str:
    """Record the event and apply it, atomically; a redelivery changes nothing, except for
    an event kept `unresolved`, which is tried again.

    Returns the outcome written on the event's row: ``applied``, ``duplicate``,
    ``ignored`` (a type meterbill does not act on), ``unresolved`` (no user could be found
    yet: kept) or ``rejected`` (e.g. a price that is not in the catalog). Any failure rolls
    the whole event back and raises WebhookFailed (500), so that Stripe delivers it again.
    """
    try:
        outcome, duplicates = read_then_write(
            gateway, lambda reads: _record_and_apply(db, settings, catalog, reads, event, now)
        )
    except Exception as exc:
        log.exception(
            "stripe event failed; rolled back",
            extra={"event_id": event["id"], "event_type": event["type"]},
        )
        raise WebhookFailed() from exc
    for user_id in sorted(duplicates):
        _cancel_duplicates(db, settings, catalog, gateway, user_id, now)
    return outcome


def _cancel_duplicates(
    db: Database,
    settings: Settings,
    catalog: Catalog,
    gateway: StripeGateway,
    user_id: str,
    now: datetime,
) -> None:
    """After the event's commit, with no transaction open: a failure here leaves the event
    applied (Stripe need not send it again) and the `duplicates` schedule tries again."""
    try:
        cancel_duplicate_subscriptions(db, settings, catalog, gateway, user_id, now)
    except Exception:
        log.exception("second subscription not canceled yet", extra={"user_id": user_id})


def _record_and_apply(
    db: Database,
    settings: Settings,
    catalog: Catalog,
    reads: StripeReads,
    event: dict[str, Any],
    now: datetime,
) -> tuple[str, set[str]]:
    """The event's outcome, and the users it (or the kept events it applied) showed
    holding two live subscriptions."""
    with db.transaction() as session:
        duplicates: set[str] = set()
        session.info[DUPLICATES_FOUND] = duplicates
        write_jobs_at_commit(session)  # an invoice's jobs would otherwise hold its series
        created = event.get("created")
        customer = customer_id_of(event["data"]["object"])
        # One round trip for a new event. A redelivery inserts nothing and writes nothing
        # (DO UPDATE would lock the row it finds, a write of its own, and make the commit
        # wait for the WAL); it then looks for the row kept `unresolved`, locked, to be
        # tried again — nothing for a mere duplicate.
        record = session.scalars(
            insert_for(session)(BillingEvent)
            .values(
                stripe_event_id=event["id"],
                event_type=event["type"],
                payload=json.dumps(event, separators=(",", ":"), default=str),
                stripe_created=int(created) if isinstance(created, int | float) else 0,
                stripe_customer_id=customer[:255] if customer else None,
                # A type no handler acts on is written as ignored at once (no UPDATE).
                outcome="applied" if event["type"] in HANDLERS else "ignored",
                received_at=now,
            )
            .on_conflict_do_nothing(index_elements=["stripe_event_id"])
            .returning(BillingEvent)
        ).one_or_none()
        if record is None:
            record = _kept_event(session, event["id"])
            if record is None:
                return "duplicate", set()
            event = json.loads(record.payload or "{}")
        elif record.outcome == "ignored":
            return "ignored", set()
        outcome = _apply_record(session, record, event, reads, settings, catalog, now)
        return outcome, duplicates


def _kept_event(
    session: Session, event_id: str, *, skip_locked: bool = False
) -> BillingEvent | None:
    """The event's row, locked, if it was kept unresolved (to be tried again)."""
    return session.scalars(
        select(BillingEvent)
        .where(BillingEvent.stripe_event_id == event_id, BillingEvent.outcome == "unresolved")
        .with_for_update(skip_locked=skip_locked)
        .execution_options(populate_existing=True)
    ).one_or_none()


def _apply_record(
    session: Session,
    record: BillingEvent,
    event: dict[str, Any],
    reads: StripeReads,
    settings: Settings,
    catalog: Catalog,
    now: datetime,
) -> str:
    """Run the event's handler and write its outcome; then apply the events kept for the
    customers it linked to a user."""
    context = EventContext(
        session,
        record,
        event,
        reads,
        settings,
        catalog,
        timedelta(days=settings.grace_days),
        now,
    )
    handler = HANDLERS.get(event["type"])
    outcome, error = handler(context) if handler else ("ignored", None)
    record.outcome, record.error = outcome, error
    if error:
        log.warning(
            "stripe event not applied",
            extra={
                "event_id": event["id"],
                "event_type": event["type"],
                "outcome": outcome,
                "reason": error,
            },
        )
    for customer_id in context.linked:
        for kept in _kept_events_of(session, customer_id):
            _apply_record(
                session, kept, json.loads(kept.payload or "{}"), reads, settings, catalog, now
            )
    return outcome


def _apply_order() -> Any:
    return case(APPLY_ORDER, value=BillingEvent.event_type, else_=3)


def _kept_events_of(session: Session, customer_id: str) -> list[BillingEvent]:
    return list(
        session.scalars(
            select(BillingEvent)
            .where(
                BillingEvent.outcome == "unresolved",
                BillingEvent.stripe_customer_id == customer_id,
            )
            .order_by(_apply_order(), BillingEvent.stripe_created, BillingEvent.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )


def apply_kept_events(
    db: Database,
    settings: Settings,
    catalog: Catalog,
    gateway: StripeGateway,
    now: datetime,
    batch: int = 200,
) -> int:
    """Apply the kept (`unresolved`) events whose customer is now linked to a user — e.g.
    by a checkout, which links without any event; returns how many were applied."""
    linked = select(User.stripe_customer_id).where(User.stripe_customer_id.is_not(None))
    with db.reading() as session:
        due = session.scalars(
            select(BillingEvent.stripe_event_id)
            .where(
                BillingEvent.outcome == "unresolved",
                BillingEvent.stripe_customer_id.in_(linked),
            )
            .order_by(_apply_order(), BillingEvent.stripe_created, BillingEvent.id)
            .limit(batch)
        ).all()
    applied = 0
    for event_id in due:

        def apply(reads: StripeReads, event_id: str = event_id) -> str:
            with db.transaction() as session:
                # A row another transaction holds is being applied by it: skip it.
                kept = _kept_event(session, event_id, skip_locked=True)
                if kept is None:
                    return "duplicate"  # applied meanwhile
                event = json.loads(kept.payload or "{}")
                return _apply_record(session, kept, event, reads, settings, catalog, now)

        try:
            applied += read_then_write(gateway, apply) == "applied"
        except Exception:
            log.exception("kept stripe event failed again", extra={"event_id": event_id})
    return applied
