"""Who is signed in to the console, and the CSRF check every form goes through.

The session cookie holds a random token (the database keeps its SHA-256); it is
HttpOnly, SameSite=Strict and Secure when the request came over TLS (directly or through a
proxy uvicorn trusts). Every form carries the session's CSRF token; the sign-in form, which
has no session yet, carries a random value that must match its own cookie (double submit).
With METERBILL_ADMIN_PROXY_HEADER set, a request from a trusted proxy
(METERBILL_ADMIN_TRUSTED_PROXIES) that names an existing operator in that header is
signed in as that operator (single sign-on in front of meterbill).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from starlette.datastructures import FormData

from meterbill.admin.service import (
    Operator,
    csrf_matches,
    operator_by_email,
    operator_of_session,
)
from meterbill.console.links import link_key
from meterbill.services import Services, get_services

SESSION_COOKIE = "meterbill_admin"
SIGNIN_CSRF_COOKIE = "meterbill_signin_csrf"


class SignInRequired(Exception):
    """No operator is signed in: the browser is sent to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        self.location = f"/admin/sign-in?next={quote(next_path, safe='/')}"


class CsrfRefused(Exception):
    """A console form arrived without the CSRF token of the session that served it."""


def is_secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _from_proxy(request: Request, services: Services) -> Operator | None:
    settings = services.settings
    if not settings.admin_proxy_header:
        return None
    trusted = {ip.strip() for ip in settings.admin_trusted_proxies.split(",") if ip.strip()}
    if request.client is None or request.client.host not in trusted:
        return None
    email = request.headers.get(settings.admin_proxy_header)
    if not email:
        return None
    seed = link_key(services.db, settings, services.now()).hex()
    with services.db.reading() as session:
        return operator_by_email(session, email, seed)


def signed_in(request: Request, services: Services) -> Operator | None:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        with services.db.reading() as session:
            operator = operator_of_session(session, token, services.now())
        if operator is not None:
            return operator
    return _from_proxy(request, services)


def require_operator(
    request: Request, services: Annotated[Services, Depends(get_services)]
) -> Operator:
    operator = signed_in(request, services)
    if operator is None:
        path = request.url.path if request.method == "GET" else "/admin"
        raise SignInRequired(path if path.startswith("/admin") else "/admin")
    return operator


async def checked_form(
    request: Request, operator: Annotated[Operator, Depends(require_operator)]
) -> FormData:
    """The posted form, once its CSRF token is the session's."""
    form = await request.form(max_files=0, max_fields=50)
    presented = form.get("csrf")
    if not csrf_matches(operator.csrf_token, presented if isinstance(presented, str) else None):
        raise CsrfRefused()
    return form


OperatorDep = Annotated[Operator, Depends(require_operator)]
FormDep = Annotated[FormData, Depends(checked_form)]
ServicesDep = Annotated[Services, Depends(get_services)]
