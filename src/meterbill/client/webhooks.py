"""Verify the webhooks meterbill sends to your backend.

    from meterbill.client.webhooks import verify_webhook, WebhookVerificationError

    try:
        event = verify_webhook(request.body, request.headers["Meterbill-Signature"], SECRET)
    except WebhookVerificationError:
        return 400
    if already_seen(event["id"]):   # deliveries are retried: dedupe on the event id
        return 200

The scheme is Stripe's: the header is ``t=<unix time>,v1=<hex HMAC-SHA256>`` of
``"<t>.<raw body>"`` keyed by the shared secret (METERBILL_WEBHOOK_SECRET). Several ``v1``
values may be present (while a secret is rotated): one match is enough. This module needs
nothing but the standard library, so it can be copied into a backend as is.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

__all__ = ["WebhookVerificationError", "verify_webhook"]


class WebhookVerificationError(ValueError):
    """The payload is not a webhook meterbill signed with this secret, or it is too old."""


def verify_webhook(
    payload: bytes | str,
    header: str | None,
    secret: str,
    tolerance: int = 300,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """The event in `payload` once its signature and timestamp are checked.

    Raises WebhookVerificationError when the header is missing or malformed, no signature
    matches, or the timestamp is more than `tolerance` seconds away from now (replays).
    """
    if not secret:
        raise WebhookVerificationError("no secret given")
    body = payload.encode() if isinstance(payload, str) else payload
    timestamp, signatures = _parse_header(header or "")
    signed = str(timestamp).encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise WebhookVerificationError("no signature matches the payload")
    current = time.time() if now is None else now
    if tolerance > 0 and abs(current - timestamp) > tolerance:
        raise WebhookVerificationError("timestamp outside the tolerance")
    try:
        event = json.loads(body)
    except ValueError as exc:
        raise WebhookVerificationError("payload is not JSON") from exc
    if not isinstance(event, dict):
        raise WebhookVerificationError("payload is not an event object")
    return event


def _parse_header(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError as exc:
                raise WebhookVerificationError("malformed timestamp") from exc
        elif key == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise WebhookVerificationError("header lacks t= or v1=")
    return timestamp, signatures
