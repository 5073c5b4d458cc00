"""Signed, expiring links to a user's billing page.

A link carries `user id | language | expiry` and an HMAC-SHA256 of them under a key
derived from METERBILL_SECRET_KEY (or, when it is not set, from a random secret made once
and kept in the database, so every process agrees). Changing any byte, or arriving after
the expiry, makes the link invalid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from meterbill.admin.service import shared_secret
from meterbill.auth.service import ensure_user
from meterbill.config import Settings
from meterbill.db import Database
from meterbill.errors import InvalidBillingLink

LINK_KEY_ROW = "billing_links"
LANGUAGES = ("fr", "en")


@dataclass(frozen=True)
class BillingLink:
    user_id: str
    language: str | None
    expires_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def link_key(db: Database, settings: Settings, now: datetime) -> bytes:
    """The key links are signed with (derived, so the raw secret signs nothing directly)."""
    secret = settings.secret_key
    if not secret:
        with db.transaction() as session:
            secret = shared_secret(session, LINK_KEY_ROW, now)
    return hashlib.sha256(b"meterbill billing-page link\0" + secret.encode()).digest()


def sign_link(key: bytes, link: BillingLink) -> str:
    body = json.dumps(
        [link.user_id, link.language or "", int(link.expires_at.timestamp())],
        separators=(",", ":"),
    ).encode()
    signature = hmac.new(key, body, hashlib.sha256).digest()
    return f"{_b64(body)}.{_b64(signature)}"


def read_link(key: bytes, token: str, now: datetime) -> BillingLink:
    """The link's content if its signature holds and it has not expired."""
    try:
        body_part, signature_part = token.split(".")
        body, signature = _unb64(body_part), _unb64(signature_part)
    except ValueError:
        raise InvalidBillingLink() from None
    expected = hmac.new(key, body, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise InvalidBillingLink()
    user_id, language, expires = json.loads(body)
    expires_at = datetime.fromtimestamp(int(expires), UTC)
    if expires_at <= now:
        raise InvalidBillingLink(expired=True)
    return BillingLink(str(user_id), language if language in LANGUAGES else None, expires_at)


def create_billing_link(
    db: Database,
    settings: Settings,
    base_url: str,
    user_id: str,
    language: str | None,
    now: datetime,
    minutes: int | None = None,
) -> tuple[str, datetime]:
    """(URL, expiry) of a billing page for the user, created on the free plan if unknown."""
    with db.transaction() as session:
        ensure_user(session, user_id)
    expires_at = now + timedelta(minutes=minutes or settings.billing_link_minutes)
    token = sign_link(link_key(db, settings, now), BillingLink(user_id, language, expires_at))
    return f"{base_url.rstrip('/')}/billing/page/{token}", expires_at
