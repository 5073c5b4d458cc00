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
    token = _bearer(request)
    if token is None:
        raise Unauthorized()
    claims = decode_user_token(services.settings, token)
    with services.db.reading() as session:
        user = session.get(User, claims.user_id)
        known = (
            user is not None
            and (claims.email is None or user.email == claims.email)
            and (claims.locale is None or user.locale == claims.locale)
        )
    if not known:
        with services.db.transaction() as session:
            ensure_user(session, claims.user_id, claims.email)
            if claims.locale:
                session.execute(
                    update(User).where(User.id == claims.user_id).values(locale=claims.locale)
                )
    return claims


def api_client(request: Request, services: Annotated[Services, Depends(get_services)]) -> str:
    """The name of the server-to-server API key presented (Bearer or X-API-Key)."""
    presented = request.headers.get("x-api-key") or _bearer(request)
    if not presented:
        raise InvalidApiKey()
    with services.db.reading() as session:
        key = verify_api_key(session, presented)
        return key.name


CurrentUser = Annotated[TokenClaims, Depends(current_user)]
ApiClient = Annotated[str, Depends(api_client)]
ServicesDep = Annotated[Services, Depends(get_services)]
