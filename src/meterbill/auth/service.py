"""End-user tokens, the users they create, and server-to-server API keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import jwt
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from meterbill.auth.addresses import single_address
from meterbill.auth.models import ApiKey, User
from meterbill.config import Settings
from meterbill.db import insert_for, utcnow
from meterbill.errors import AuthNotConfigured, InvalidApiKey, InvalidToken

API_KEY_PREFIX = "mb_"


@dataclass(frozen=True)
class TokenClaims:
    user_id: str
    email: str | None
    locale: str | None = None  # "fr" or "en": the language of the user's emails


def decode_user_token(settings: Settings, token: str) -> TokenClaims:
    """The claims of a valid end-user token; raises InvalidToken for anything else.

    Only the algorithms of the configured key are accepted, so `alg: none` and
    algorithm-confusion tokens fail; `exp` and `sub` are required.
    """
    if settings.jwt_secret:
        key, algorithms = settings.jwt_secret, ["HS256"]
    elif settings.jwt_public_key:
        key, algorithms = settings.jwt_public_key, ["RS256", "ES256"]
    else:
        raise AuthNotConfigured()
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={
                "require": ["exp", "sub"],
                "verify_aud": settings.jwt_audience is not None,
            },
            leeway=5,
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken() from exc
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.strip() or len(subject) > 255:
        raise InvalidToken()
    if "\x00" in subject:  # no database keeps a NUL in text (PostgreSQL refuses it)
        raise InvalidToken()
    # A claim that is not exactly one address is ignored: the user is who `sub` says,
    # and keeps the address they had (or none), rather than mail going to several people.
    email = single_address(claims.get("email"))
    locale = str(claims.get("locale") or "").lower()[:2]
    return TokenClaims(subject, email, locale if locale in ("fr", "en") else None)


def ensure_user(session: Session, user_id: str, email: str | None = None) -> None:
    """Create the user on the free plan if it does not exist yet (safe under concurrency)."""
    insert = insert_for(session)
    session.execute(
        insert(User)
        .values(id=user_id, email=email, plan="free", created_at=utcnow(), updated_at=utcnow())
        .on_conflict_do_nothing(index_elements=["id"])
    )
    if email:
        session.execute(
            update(User)
            .where(User.id == user_id, (User.email.is_(None)) | (User.email != email))
            .values(email=email)
        )


def lock_user(session: Session, user_id: str, email: str | None = None) -> User:
    """The user row, created if needed and locked until the transaction ends.

    Every change to one user's billing state takes this lock first, so concurrent requests
    and webhooks about the same user are applied one after the other.
    """
    ensure_user(session, user_id, email)
    user = session.scalars(
        select(User)
        .where(User.id == user_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    return user


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(session: Session, name: str) -> str:
    """Create a key and return it; this is the only time its full text exists."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    session.add(ApiKey(name=name, prefix=prefix, key_hash=_digest(secret)))
    session.flush()
    return f"{API_KEY_PREFIX}{prefix}_{secret}"


def verify_api_key(session: Session, presented: str) -> ApiKey:
    """The live key matching `presented`, compared in constant time; else InvalidApiKey."""
    prefix, secret = _split_key(presented)
    key = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one_or_none()
    _accept(secret, key.key_hash if key else None, key.revoked_at if key else None)
    assert key is not None  # _accept refused a missing key
    return key


def api_key_name(raw: Any, presented: str) -> str:
    """`verify_api_key` in one statement on a psycopg connection (hot paths): the name of
    the live key matching `presented`; else InvalidApiKey."""
    prefix, secret = _split_key(presented)
    row = raw.execute(
        "SELECT name, key_hash, revoked_at FROM api_keys WHERE prefix = %s", (prefix,)
    ).fetchone()
    _accept(secret, row[1] if row else None, row[2] if row else None)
    return str(row[0])


def _split_key(presented: str) -> tuple[str, str]:
    prefix, _, secret = presented.removeprefix(API_KEY_PREFIX).partition("_")
    return prefix, secret


def _accept(secret: str, key_hash: str | None, revoked_at: object) -> None:
    """Compare in constant time (an unknown prefix costs the same); raise InvalidApiKey."""
    expected = key_hash if key_hash is not None else _digest("")
    if not hmac.compare_digest(expected, _digest(secret)) or key_hash is None or revoked_at:
        raise InvalidApiKey()


def revoke_api_key(session: Session, prefix: str) -> bool:
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
