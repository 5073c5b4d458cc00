"""Templates, and the headers every console page is served with."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates
from starlette.requests import Request
from starlette.responses import HTMLResponse

from meterbill.console import i18n

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
env = templates.env
env.globals.update(
    money=lambda cents, currency, language="en": i18n.format_money(language, cents, currency),
    number=lambda value, language="en": i18n.format_number(language, int(value or 0)),
)


def _stamp(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return value.strftime(fmt) if value else "—"


env.filters["stamp"] = _stamp

# Admin pages are never framed; the billing page may be embedded by the SaaS (iframe).
ADMIN_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
BILLING_HEADERS = {
    # Checkout and portal are reached through meterbill's own redirects, so forms post here.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    # The page's URL is the credential: never send it to another site.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def page(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    return templates.TemplateResponse(
        request, name, context, status_code=status, headers=headers or ADMIN_HEADERS
    )
