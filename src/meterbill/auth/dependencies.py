"""FastAPI dependencies that authenticate end users (JWT) and servers (API keys)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import update

from meterbill.auth.models import User
from meterbill.auth.service import TokenClaims, decode_user_token, ensure_user, verify_api_key
from meterbill.errors import InvalidApiKey, Unauthorized
from meterbill.services import Services, get_services


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def current_user(
    request: Request, services: Annotated[Services, Depends(get_services)]
) -> TokenClaims:
    """The end user of a valid JWT, created on the free plan at their first request."""
    claims = _claims(request, services)
    with services.db.reading() as session:
        user = session.get(User, claims.user_id)
        known = user is not None and user_matches(claims, user.email, user.locale)
    if not known:
        register_user(services, claims)
    return claims


async def token_claims(
    request: Request, services: Annotated[Services, Depends(get_services)]
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


def api_client(request: Request, services: Annotated[Services, Depends(get_services)]) -> str:
    """The name of the server-to-server API key presented (Bearer or X-API-Key)."""
    presented = request.headers.get("x-api-key") or _bearer(request)
    if not presented:
        raise InvalidApiKey()
    with services.db.reading() as session:
        key = verify_api_key(session, presented)
        return key.name


async def presented_api_key(request: Request) -> str:
    """The server-to-server key presented (X-API-Key or Bearer), not yet verified: for
    handlers that verify it on their own connection (`auth.service.api_key_name`)."""
    presented = request.headers.get("x-api-key") or _bearer(request)
    if not presented:
        raise InvalidApiKey()
    return presented


CurrentUser = Annotated[TokenClaims, Depends(current_user)]
TokenUser = Annotated[TokenClaims, Depends(token_claims)]
PresentedApiKey = Annotated[str, Depends(presented_api_key)]
ApiClient = Annotated[str, Depends(api_client)]
ServicesDep = Annotated[Services, Depends(get_services)]
