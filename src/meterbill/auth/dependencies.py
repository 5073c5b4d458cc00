"""FastAPI dependencies that authenticate end users (JWT) and servers (API keys).

They use FastAPI's security classes so the OpenAPI document names both schemes and
Swagger's Authorize button fills the right header."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import update

from meterbill.auth.models import ApiKey, User
from meterbill.auth.service import TokenClaims, decode_user_token, ensure_user, verify_api_key
from meterbill.errors import (
    AuthNotConfigured,
    AuthUnavailable,
    InsufficientScope,
    InvalidApiKey,
    InvalidToken,
    Unauthorized,
)
from meterbill.openapi import raises
from meterbill.services import Services, get_services

user_token = HTTPBearer(
    scheme_name="userToken",
    bearerFormat="JWT",
    description="An end user's JWT, signed with METERBILL_JWT_SECRET (HS256), "
    "METERBILL_JWT_PUBLIC_KEY (RS256/ES256) or a key of METERBILL_JWT_JWKS_URL; "
    "claims: the user id (`sub` by default), `exp`; optional `email`, `locale`.",
    auto_error=False,
)
api_key_header = APIKeyHeader(
    name="X-API-Key",
    scheme_name="apiKey",
    description="A server-to-server key made with `meterbill apikey create NAME`.",
    auto_error=False,
)
api_key_bearer = HTTPBearer(
    scheme_name="apiKeyBearer",
    description="The same API key, sent as `Authorization: Bearer mb_…`.",
    auto_error=False,
)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


@raises(Unauthorized, InvalidToken, AuthNotConfigured, AuthUnavailable)
def current_user(
    request: Request,
    services: Annotated[Services, Depends(get_services)],
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(user_token)],
) -> TokenClaims:
    """The end user of a valid JWT, created on the free plan at their first request."""
    claims = _claims(request, services)
    with services.db.reading() as session:
        user = session.get(User, claims.user_id)
        known = user is not None and user_matches(claims, user.email, user.locale)
    if not known:
        register_user(services, claims)
    return claims


@raises(Unauthorized, InvalidToken, AuthNotConfigured, AuthUnavailable)
async def token_claims(
    request: Request,
    services: Annotated[Services, Depends(get_services)],
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(user_token)],
) -> TokenClaims:
    """The claims of a valid JWT, without a database read: for handlers that read the user
    in their own query (then `user_matches` / `register_user`)."""
    return _claims(request, services)


def _claims(request: Request, services: Services) -> TokenClaims:
    token = _bearer(request)
    if token is None:
        raise Unauthorized()
    return decode_user_token(services.settings, token)


def user_matches(claims: TokenClaims, email: str | None, locale: str | None) -> bool:
    """Whether the stored user already says what the token says."""
    return (claims.email is None or email == claims.email) and (
        claims.locale is None or locale == claims.locale
    )


def register_user(services: Services, claims: TokenClaims) -> None:
    """Create the token's user on the free plan, or bring its email and locale up to date."""
    with services.db.transaction() as session:
        ensure_user(session, claims.user_id, claims.email)
        if claims.locale:
            session.execute(
                update(User).where(User.id == claims.user_id).values(locale=claims.locale)
            )


def _api_key(request: Request, services: Services) -> ApiKey:
    presented = request.headers.get("x-api-key") or _bearer(request)
    if not presented:
        raise InvalidApiKey()
    with services.db.reading() as session:
        key = verify_api_key(session, presented)
        session.expunge(key)
        return key


def api_key_with(scope: str) -> Callable[..., str]:
    """A dependency: the name of the presented API key (Bearer or X-API-Key), which must
    hold `scope`; InvalidApiKey (401) or InsufficientScope (403) otherwise."""

    @raises(InvalidApiKey, InsufficientScope)
    def api_client(
        request: Request,
        services: Annotated[Services, Depends(get_services)],
        _header: Annotated[str | None, Depends(api_key_header)],
        _bearer_key: Annotated[HTTPAuthorizationCredentials | None, Depends(api_key_bearer)],
    ) -> str:
        key = _api_key(request, services)
        if scope not in key.scopes.split():
            raise InsufficientScope(scope)
        return key.name

    api_client.__meterbill_scope__ = scope  # type: ignore[attr-defined]
    return api_client


@raises(InvalidApiKey)
def any_api_key(
    request: Request,
    services: Annotated[Services, Depends(get_services)],
    _header: Annotated[str | None, Depends(api_key_header)],
    _bearer_key: Annotated[HTTPAuthorizationCredentials | None, Depends(api_key_bearer)],
) -> ApiKey:
    """The presented API key, whatever its scopes (for the start-up check)."""
    return _api_key(request, services)


def presented_key_with(scope: str) -> Callable[..., Any]:
    """A dependency: the server-to-server key presented (X-API-Key or Bearer), not yet
    verified: for handlers that verify it, and its `scope`, on their own connection
    (`auth.service.api_key_name(raw, key, scope)`)."""

    @raises(InvalidApiKey, InsufficientScope)
    async def presented_api_key(
        request: Request,
        _header: Annotated[str | None, Depends(api_key_header)],
        _bearer_key: Annotated[HTTPAuthorizationCredentials | None, Depends(api_key_bearer)],
    ) -> str:
        presented = request.headers.get("x-api-key") or _bearer(request)
        if not presented:
            raise InvalidApiKey()
        return presented

    presented_api_key.__meterbill_scope__ = scope  # type: ignore[attr-defined]
    return presented_api_key


CurrentUser = Annotated[TokenClaims, Depends(current_user)]
# A key with the `ingest` scope: sending usage (events, consume).
IngestClient = Annotated[str, Depends(api_key_with("ingest"))]
# A key with the `read` scope: quota checks and other reads of usage.
ReadClient = Annotated[str, Depends(api_key_with("read"))]
# A key with the `admin` scope: anything else; an endpoint that names no scope needs admin.
AdminClient = Annotated[str, Depends(api_key_with("admin"))]
ApiClient = AdminClient
TokenUser = Annotated[TokenClaims, Depends(token_claims)]
# The presented key, unverified: the handler verifies it and the scope on its connection.
PresentedReadKey = Annotated[str, Depends(presented_key_with("read"))]
PresentedIngestKey = Annotated[str, Depends(presented_key_with("ingest"))]
ServicesDep = Annotated[Services, Depends(get_services)]
