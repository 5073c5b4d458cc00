"""The end-user billing page, reached through a signed link that expires.

A SaaS asks `POST /api/v1/billing/page-links` (API key) for a link and sends its user
there, or embeds it in an iframe. The page shows the plan and its status, the month's
usage against each limit, a plan change, the payment portal, and the documents to
download — through the same services as the JSON API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.responses import RedirectResponse, Response

from meterbill.auth.dependencies import ApiClient
from meterbill.billing import plans
from meterbill.billing.service import open_portal, start_checkout, subscription_status
from meterbill.billing.subscriptions import LIVE_STATUSES
from meterbill.console import i18n
from meterbill.console.links import BillingLink, create_billing_link, link_key, read_link
from meterbill.console.rendering import BILLING_HEADERS, page
from meterbill.console.session import ServicesDep
from meterbill.errors import InvalidBillingLink, MeterbillError
from meterbill.invoicing.ledger import list_documents
from meterbill.invoicing.pdf import ensure_pdf
from meterbill.services import Services
from meterbill.usage.recording import month_of
from meterbill.usage.service import monthly_consumption

api_router = APIRouter(prefix="/api/v1/billing", tags=["billing"])
router = APIRouter(prefix="/billing/page", include_in_schema=False)
Token = Annotated[str, Path(min_length=10, max_length=1024, pattern=r"^[A-Za-z0-9_.-]+$")]
InvoiceNumber = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9-]+$")]


class PageLinkIn(BaseModel):
    user_id: str = Field(min_length=1, max_length=255, pattern=r"^[^\x00]+$")
    locale: Literal["fr", "en"] | None = None
    expires_in_minutes: int | None = Field(None, ge=1, le=10080)


class PageLinkOut(BaseModel):
    url: str
    expires_at: datetime


@api_router.post("/page-links", response_model=PageLinkOut)
def create_page_link(
    body: PageLinkIn, request: Request, client: ApiClient, services: ServicesDep
) -> PageLinkOut:
    """A signed link to the user's billing page (15 minutes unless said otherwise)."""
    base = services.settings.public_url or str(request.base_url)
    url, expires_at = create_billing_link(
        services.db,
        services.settings,
        base,
        body.user_id,
        body.locale,
        services.now(),
        body.expires_in_minutes,
    )
    return PageLinkOut(url=url, expires_at=expires_at)


def _link(services: Services, token: str) -> BillingLink:
    now = services.now()
    return read_link(link_key(services.db, services.settings, now), token, now)


def _refused(request: Request) -> Response:
    language = i18n.page_language(request, None)
    return page(
        request,
        "billing_invalid.html",
        {"lang": language, "t": lambda key, **v: i18n.translate(language, key, **v)},
        status=403,
        headers=BILLING_HEADERS,
    )


def _failed(request: Request, token: str, language: str, exc: MeterbillError) -> Response:
    return page(
        request,
        "billing_error.html",
        {
            "lang": language,
            "t": lambda key, **v: i18n.translate(language, key, **v),
            "message": exc.message(language),
            "back": f"/billing/page/{token}?lang={language}",
        },
        status=exc.status,
        headers=BILLING_HEADERS,
    )


def billing_view(services: Services, user_id: str) -> dict[str, Any]:
    """What the page shows about the user, from the billing, usage and invoicing services."""
    now = services.now()
    status = subscription_status(services.db, user_id, now)
    with services.db.reading() as session:
        consumption = monthly_consumption(session, services.catalog, user_id, month_of(now), now)
        documents, total = list_documents(session, user_id, 1, 24)
    paid = [name for name in sorted(services.catalog.plans) if name != "free"]
    return {
        "status": status,
        "consumption": consumption,
        "plan": services.catalog.plan(status.plan),
        "documents": documents,
        "more_documents": total > len(documents),
        "paid_plans": paid,
        "subscribed": status.status in LIVE_STATUSES and status.stripe_subscription_id,
    }


@router.get("/{token}")
def billing_page(request: Request, token: Token, services: ServicesDep) -> Response:
    try:
        link = _link(services, token)
    except InvalidBillingLink:
        return _refused(request)
    language = i18n.page_language(request, link.language)
    view = billing_view(services, link.user_id)
    return page(
        request,
        "billing_page.html",
        {
            "lang": language,
            "other": "en" if language == "fr" else "fr",
            "t": lambda key, **v: i18n.translate(language, key, **v),
            "date": lambda value: i18n.format_date(language, value),
            "percent": lambda value: i18n.format_percent(language, value),
            "metric_label": lambda metric: i18n.metric_label(language, metric),
            "month_name": i18n.format_month(language, view["consumption"].month),
            "token": token,
            "link": link,
            "plan_changed": request.query_params.get("done") == "plan",
            **view,
        },
        headers=BILLING_HEADERS,
    )


@router.post("/{token}/plan")
async def change_plan(request: Request, token: Token, services: ServicesDep) -> Response:
    """A subscriber's plan changes through the subscription they pay for
    (`billing.plans.change_plan`, as `POST /api/v1/billing/plan`); a user paying for nothing
    buys the plan through Stripe Checkout. Never a second subscription."""
    try:
        link = _link(services, token)
    except InvalidBillingLink:
        return _refused(request)
    form = await request.form(max_files=0, max_fields=5)
    language = i18n.page_language(request, link.language)
    plan = str(form.get("plan") or "")
    try:
        status = await run_in_threadpool(
            subscription_status, services.db, link.user_id, services.now()
        )
        if status.status in LIVE_STATUSES and status.stripe_subscription_id:
            await run_in_threadpool(
                plans.change_plan,
                services.db,
                services.settings,
                services.catalog,
                services.gateway,
                link.user_id,
                plan,
                services.now(),
            )
            url = f"/billing/page/{token}?lang={language}&done=plan"
        else:
            checkout = await run_in_threadpool(
                start_checkout,
                services.db,
                services.settings,
                services.catalog,
                services.gateway,
                link.user_id,
                None,
                plan,
                services.now(),
            )
            url = checkout.checkout_url
    except MeterbillError as exc:
        return _failed(request, token, language, exc)
    return RedirectResponse(url, status_code=303)


@router.post("/{token}/portal")
async def portal(request: Request, token: Token, services: ServicesDep) -> Response:
    try:
        link = _link(services, token)
    except InvalidBillingLink:
        return _refused(request)
    language = i18n.page_language(request, link.language)
    try:
        url = await run_in_threadpool(open_portal, services.db, services.gateway, link.user_id)
    except MeterbillError as exc:
        return _failed(request, token, language, exc)
    return RedirectResponse(url, status_code=303)


@router.get("/{token}/documents/{number}.pdf")
async def document_pdf(
    request: Request, token: Token, number: InvoiceNumber, services: ServicesDep
) -> Response:
    try:
        link = _link(services, token)
    except InvalidBillingLink:
        return _refused(request)
    try:
        path = await run_in_threadpool(
            ensure_pdf, services.db, services.settings, number, link.user_id
        )
    except MeterbillError as exc:
        return _failed(request, token, i18n.page_language(request, link.language), exc)
    return FileResponse(path, media_type="application/pdf", filename=f"{number}.pdf")
