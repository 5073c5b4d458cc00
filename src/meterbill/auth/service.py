"""End-user tokens, the users they create, and server-to-server API keys."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import PyJWKClient, PyJWKClientConnectionError, PyJWKClientError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from meterbill.auth.addresses import single_address
from meterbill.auth.models import ApiKey, User
from meterbill.config import Settings
from meterbill.db import insert_for, utcnow
from meterbill.errors import (
    AuthNotConfigured,
    AuthUnavailable,
    InsufficientScope,
    InvalidApiKey,
    InvalidToken,
)

API_KEY_PREFIX = "mb_"
SCOPES = ("ingest", "read", "admin")
JWKS_CACHE_SECONDS = 300
log = logging.getLogger("meterbill.auth")


@dataclass(frozen=True)
class TokenClaims:
    user_id: str
    email: str | None
    locale: str | None = None  # "fr" or "en": the language of the user's emails


_jwks_clients: dict[str, PyJWKClient] = {}
_jwks_lock = threading.Lock()


def jwks_client(url: str, cooldown: float = 30.0) -> PyJWKClient:
    """One PyJWKClient per JWKS URL and process: keys are fetched once, cached for
    JWKS_CACHE_SECONDS, and fetched again when a token names a `kid` the cache lacks
    (the provider rotated its keys)."""
    with _jwks_lock:
        client = _jwks_clients.get(url)
        if client is None:
            client = PyJWKClient(
                url,
                cache_keys=True,
                lifespan=JWKS_CACHE_SECONDS,
                timeout=5,
                cooldown_duration=cooldown,
            )
            _jwks_clients[url] = client
        return client


def _verification_key(settings: Settings, token: str) -> tuple[Any, list[str]]:
    if settings.jwt_jwks_url:
        try:
            client = jwks_client(settings.jwt_jwks_url, settings.jwt_jwks_cooldown_seconds)
            signing = client.get_signing_key_from_jwt(token)
        except PyJWKClientConnectionError as exc:
            log.warning("jwks fetch failed", extra={"jwks_url": settings.jwt_jwks_url})
            raise AuthUnavailable() from exc
        return signing.key, [signing.algorithm_name or "RS256"]
    if settings.jwt_secret:
        return settings.jwt_secret, ["HS256"]
    if settings.jwt_public_key:
        return settings.jwt_public_key, ["RS256", "ES256"]
    raise AuthNotConfigured()


def _refuse(reason: str) -> InvalidToken:
    """InvalidToken for the client; the reason goes to the log only (never the token)."""
    log.info("token refused", extra={"reason": reason})
    return InvalidToken()


def decode_user_token(settings: Settings, token: str) -> TokenClaims:
    """The claims of a valid end-user token; raises InvalidToken for anything else.

    Only the algorithms of the configured key are accepted, so `alg: none` and
    algorithm-confusion tokens fail; `exp` and the user-id claim (`sub` unless
    METERBILL_JWT_USER_CLAIM says otherwise) are required. Why a token was refused is
    logged, never returned.
    """
    claim = settings.jwt_user_claim
    try:
        key, algorithms = _verification_key(settings, token)
        claims = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={
                "require": ["exp", claim],
                "verify_aud": settings.jwt_audience is not None,
            },
            leeway=5,
        )
    except (jwt.PyJWTError, PyJWKClientError) as exc:
        raise _refuse(f"{type(exc).__name__}: {exc}") from exc
    subject = claims.get(claim)
    if isinstance(subject, int) and not isinstance(subject, bool):
        subject = str(subject)
    if not isinstance(subject, str) or not subject.strip() or len(subject) > 255:
        raise _refuse(f"claim {claim!r} missing, empty, too long or not a string")
    if "\x00" in subject:  # no database keeps a NUL in text (PostgreSQL refuses it)
        raise _refuse(f"claim {claim!r} contains a NUL character")
    # A claim that is not exactly one address is ignored: the user is who `sub` says,
    # and keeps the address they had (or none), rather than mail going to several people.
    email = single_address(claims.get("email"))
    locale = str(claims.get("locale") or "").lower()[:2]
    return TokenClaims(subject, email, locale if locale in ("fr", "en") else None)


def issue_user_token(
    settings: Settings, user_id: str, *, email: str | None = None, hours: int = 24
) -> str:
    """A token meterbill accepts for `user_id`, signed with METERBILL_JWT_SECRET (for local
    trials and `meterbill dev`; production tokens come from the identity provider)."""
    if not settings.jwt_secret:
        raise AuthNotConfigured(
            "METERBILL_JWT_SECRET non défini : les jetons viennent du fournisseur d'identité",
            "METERBILL_JWT_SECRET is not set: tokens come from your identity provider",
        )
    claims: dict[str, object] = {
        "sub": user_id,
        "exp": int(time.time()) + hours * 3600,
        "iat": int(time.time()),
    }
    if email:
        claims["email"] = email
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


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


def create_api_key(session: Session, name: str, scopes: tuple[str, ...] = SCOPES) -> str:
    """Create a key and return it; this is the only time its full text exists."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be among {', '.join(SCOPES)}")
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    ordered = " ".join(scope for scope in SCOPES if scope in scopes)
    session.add(ApiKey(name=name, prefix=prefix, key_hash=_digest(secret), scopes=ordered))
    session.flush()
    return f"{API_KEY_PREFIX}{prefix}_{secret}"


def verify_api_key(session: Session, presented: str, scope: str | None = None) -> ApiKey:
    """The live key matching `presented`, compared in constant time; else InvalidApiKey.
    With `scope`, a key without it raises InsufficientScope."""
    prefix, secret = _split_key(presented)
    key = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one_or_none()
    _accept(secret, key.key_hash if key else None, key.revoked_at if key else None)
    assert key is not None  # _accept refused a missing key
    _require_scope(key.scopes, scope)
    return key


def api_key_name(raw: Any, presented: str, scope: str | None = None) -> str:
    """`verify_api_key` in one statement on a psycopg connection (hot paths): the name of
    the live key matching `presented`; else InvalidApiKey (or InsufficientScope)."""
    prefix, secret = _split_key(presented)
    row = raw.execute(
        "SELECT name, key_hash, revoked_at, scopes FROM api_keys WHERE prefix = %s", (prefix,)
    ).fetchone()
    _accept(secret, row[1] if row else None, row[2] if row else None)
    _require_scope(str(row[3]), scope)
    return str(row[0])


def _require_scope(scopes: str, scope: str | None) -> None:
    if scope is not None and scope not in scopes.split():
        raise InsufficientScope(scope)


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
