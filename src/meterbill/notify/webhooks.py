"""Webhooks meterbill sends to the SaaS's backend (`METERBILL_WEBHOOK_URLS`).

An event is enqueued once, with its id, in the transaction of its cause. The worker then
fans it out into one delivery job per URL, so a receiver that is down is retried (with
backoff) without sending the event again to the ones that took it. Each delivery is signed
like Stripe's webhooks: ``Meterbill-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of
"<t>.<body>" keyed by METERBILL_WEBHOOK_SECRET>``; `meterbill.client.webhooks` verifies it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy.orm import Session

from meterbill.config import Settings
from meterbill.db import Database, utcnow
from meterbill.jobs.queue import NewJob, enqueue

WEBHOOK_EVENT = "webhook.event"
WEBHOOK_DELIVERY = "webhook.deliver"
SIGNATURE_HEADER = "Meterbill-Signature"
DELIVERY_MAX_ATTEMPTS = 15  # with the backoff cap of an hour: about ten hours of retries


class WebhookRejected(Exception):
    """The receiver did not answer 2xx; the delivery is retried later."""


class WebhookSecretMissing(Exception):
    """Webhook URLs are set but METERBILL_WEBHOOK_SECRET is not: nothing is sent unsigned."""


def emit_webhook(
    session: Session,
    event_type: str,
    data: dict[str, Any],
    *,
    cause: str | None = None,
    now: datetime | None = None,
) -> None:
    """Enqueue event `event_type` for the SaaS's backend, once per `cause` when given."""
    job = webhook_job(event_type, data, cause=cause, now=now)
    enqueue(session, job.kind, job.payload, dedupe_key=job.dedupe_key)


def webhook_job(
    event_type: str, data: dict[str, Any], *, cause: str | None = None, now: datetime | None = None
) -> NewJob:
    """The job of `emit_webhook` (for `enqueue_many`)."""
    event = {
        "id": f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": event_type,
        "created": int((now or utcnow()).timestamp()),
        "data": data,
    }
    return NewJob(WEBHOOK_EVENT, event, f"webhook:{event_type}:{cause}" if cause else None)


def fan_out(db: Database, settings: Settings, event: dict[str, Any]) -> int:
    """One delivery job per configured URL; returns how many."""
    targets = settings.webhook_targets()
    if not targets:
        return 0
    with db.transaction() as session:
        for url in targets:
            enqueue(
                session,
                WEBHOOK_DELIVERY,
                {"url": url, "event": event},
                dedupe_key=f"deliver:{event['id']}:{hashlib.sha256(url.encode()).hexdigest()[:16]}",
                max_attempts=DELIVERY_MAX_ATTEMPTS,
            )
    return len(targets)


_client: httpx.Client | None = None


def _http() -> httpx.Client:
    """One client per process: connections (and TLS setup) are reused across deliveries."""
    global _client
    if _client is None:
        _client = httpx.Client(follow_redirects=False)
    return _client


def signature_header(payload: bytes, secret: str, timestamp: int) -> str:
    signed = str(timestamp).encode() + b"." + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def deliver(settings: Settings, url: str, event: dict[str, Any]) -> None:
    """POST the event, signed at the time of sending; raises unless the receiver says 2xx.

    The signature's timestamp is the wall clock's, whatever clock the worker runs business
    rules on: the receiver checks it against its own clock.
    """
    if not settings.webhook_secret:
        raise WebhookSecretMissing("METERBILL_WEBHOOK_SECRET is not set")
    body = json.dumps(event, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "meterbill-webhooks/1",
        "Meterbill-Event-Id": str(event["id"]),
        "Meterbill-Event-Type": str(event["type"]),
        SIGNATURE_HEADER: signature_header(body, settings.webhook_secret, int(time.time())),
    }
    try:
        response = _http().post(
            url, content=body, headers=headers, timeout=settings.webhook_timeout_seconds
        )
    except httpx.HTTPError as exc:
        raise WebhookRejected(f"{url}: {type(exc).__name__}") from exc
    if not 200 <= response.status_code < 300:
        raise WebhookRejected(f"{url}: HTTP {response.status_code}")
