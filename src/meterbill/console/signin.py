"""Sign-in and sign-out pages of the operator console."""

from __future__ import annotations

import secrets
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from meterbill.admin.service import SignIn, authenticate, csrf_matches, sign_out
from meterbill.console.rendering import page
from meterbill.console.session import (
    SESSION_COOKIE,
    SIGNIN_CSRF_COOKIE,
    FormDep,
    OperatorDep,
    ServicesDep,
    is_secure,
)
from meterbill.errors import AccountLocked, InvalidCredentials
from meterbill.services import Services

router = APIRouter(prefix="/admin", include_in_schema=False)


def _safe_next(value: object) -> str:
    text = value if isinstance(value, str) else ""
    # Only a path of the console: never another site (open redirect) nor `//host`.
    if text.startswith("/admin") and not text.startswith("//") and "\\" not in text:
        return text
    return "/admin"


def _form_page(
    request: Request, next_path: str, error: str | None = None, status: int = 200
) -> Response:
    token = secrets.token_urlsafe(32)
    response = page(
        request,
        "signin.html",
        {"csrf": token, "next": next_path, "error": error},
        status=status,
    )
    response.set_cookie(
        SIGNIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=is_secure(request),
        path="/admin",
    )
    return response


@router.get("/sign-in")
def sign_in_page(request: Request) -> Response:
    return _form_page(request, _safe_next(request.query_params.get("next")))


@router.post("/sign-in")
async def sign_in(request: Request, services: ServicesDep) -> Response:
    form = await request.form(max_files=0, max_fields=10)
    next_path = _safe_next(form.get("next"))
    presented = form.get("csrf")
    if not csrf_matches(
        request.cookies.get(SIGNIN_CSRF_COOKIE, ""),
        presented if isinstance(presented, str) else None,
    ):
        return _form_page(request, next_path, "The form expired: please try again.", 403)
    email, password = str(form.get("email") or ""), str(form.get("password") or "")
    try:
        signed = await run_in_threadpool(_authenticate, services, email, password)
    except AccountLocked as exc:
        message = f"Too many failed attempts: this account is locked until {exc.until:%H:%M} UTC."
        return _form_page(request, next_path, message, 429)
    except InvalidCredentials:
        return _form_page(request, next_path, "Wrong email or password.", 401)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        signed.token,
        max_age=int(services.settings.admin_session_hours * 3600),
        httponly=True,
        samesite="strict",
        secure=is_secure(request),
        path="/admin",
    )
    response.delete_cookie(SIGNIN_CSRF_COOKIE, path="/admin")
    return response


def _authenticate(services: Services, email: str, password: str) -> SignIn:
    """Authenticate, keeping the failure count and the lock even when it fails."""
    settings, now = services.settings, services.now()
    failure: Exception | None = None
    with services.db.transaction() as session:
        try:
            return authenticate(
                session,
                email,
                password,
                now,
                max_failures=settings.admin_max_failures,
                lockout=timedelta(minutes=settings.admin_lockout_minutes),
                session_lifetime=timedelta(hours=settings.admin_session_hours),
            )
        except (InvalidCredentials, AccountLocked) as exc:
            failure = exc  # committed below with the counters and the audit line
    raise failure


@router.post("/sign-out")
def sign_out_page(operator: OperatorDep, form: FormDep, services: ServicesDep) -> Response:
    with services.db.transaction() as session:
        sign_out(session, operator, services.now())
    response = RedirectResponse("/admin/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/admin")
    return response
