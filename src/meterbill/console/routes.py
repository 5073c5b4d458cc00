"""Puts the console on the app: its routers, its static files, and how its exceptions
become pages (a redirect to sign in, a refused form) rather than JSON."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import RedirectResponse, Response

from meterbill.console import billing_page, invoices, operations, overview, signin, users
from meterbill.console.rendering import HERE, page
from meterbill.console.session import CsrfRefused, SignInRequired


def install(app: FastAPI) -> None:
    """Add the operator console (/admin) and the end-user billing page to `app`."""
    app.include_router(billing_page.api_router)
    app.include_router(billing_page.router)
    for module in (signin, overview, users, invoices, operations):
        app.include_router(module.router)
    app.mount("/console-static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.exception_handler(SignInRequired)
    async def sign_in_required(request: Request, exc: SignInRequired) -> Response:
        return RedirectResponse(exc.location, status_code=303)

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, exc: CsrfRefused) -> Response:
        return page(
            request,
            "message.html",
            {
                "title": "Form refused",
                "text": "This form did not carry a valid security token (CSRF). Reload the "
                "page and try again.",
            },
            status=403,
        )
