"""Builds the FastAPI app: routers, the one place errors become HTTP, and the lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from meterbill.billing.catalog import router as plans_router
from meterbill.billing.gateway import StripeGateway
from meterbill.billing.router import router as billing_router
from meterbill.config import Settings
from meterbill.db import Database, utcnow
from meterbill.docs_ui import install_docs
from meterbill.errors import MeterbillError, NotFound, PayloadTooLarge
from meterbill.invoicing.models import Invoice
from meterbill.invoicing.parties import missing_seller_fields
from meterbill.invoicing.pending import invoicing_readiness, issue_pending_documents
from meterbill.invoicing.router import router as invoicing_router
from meterbill.logs import configure_logging
from meterbill.migrate import upgrade
from meterbill.notify.service import notify_invoice_issued
from meterbill.openapi import (
    DatabaseUnavailable,
    InternalError,
    MalformedJson,
    MethodNotAllowed,
    ValidationFailed,
    install_openapi,
    raises,
)
from meterbill.request_limits import BodySizeLimit, route_limits
from meterbill.sandbox import is_demo_database, sandboxed
from meterbill.services import Services
from meterbill.usage.router import metering_router
from meterbill.usage.router import router as usage_router
from meterbill.validation import validation_detail

log = logging.getLogger("meterbill.app")

_HTTP_ERRORS: dict[int, tuple[str, str, str]] = {
    error.status: (error.code, error.message_fr, error.message_en)
    for error in (NotFound, MethodNotAllowed)
} | {413: (PayloadTooLarge.code, "Requête trop volumineuse", "Payload too large")}


def preferred_language(request: Request) -> str:
    """`en` when Accept-Language prefers English over French, else `fr` (the seed's)."""
    best, best_q = "fr", -1.0
    for part in request.headers.get("accept-language", "").split(","):
        tag, _, params = part.strip().partition(";")
        language = tag.strip().lower().split("-")[0]
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if language in ("en", "fr") and quality > best_q:
            best, best_q = language, quality
    return best


def error_response(
    request: Request,
    status: int,
    code: str,
    message_fr: str,
    message_en: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    message = message_en if preferred_language(request) == "en" else message_fr
    return JSONResponse({"error": message, "code": code, **extra}, status, headers=headers)


def seller_identity_warning(missing: list[str]) -> str:
    return (
        "invoices are not numbered until the seller's identity is complete; "
        f"missing: {', '.join(missing)}"
    )


def _issue_waiting_documents(services: Services) -> None:
    """Issue the documents that waited for the seller's identity, if it is complete now;
    a failure here is logged and retried by the worker, never a reason not to start."""
    missing = missing_seller_fields(services.settings)
    if missing:
        log.warning(seller_identity_warning(missing), extra={"missing": missing})
        return
    try:
        issue_pending_documents(
            services.db, services.settings, services.catalog, services.clock, _notify_issued
        )
    except Exception:
        log.exception("waiting documents not issued at start")


def _notify_issued(session: Session, document: Invoice) -> None:
    if document.kind == "invoice":
        notify_invoice_issued(session, document.id)


def _settings_for(db: Database, settings: Settings) -> Settings:
    """On a database `meterbill demo` made, nothing leaves meterbill, as in its worker:
    no Stripe call (its customers and subscriptions are made up), no email, no outgoing
    webhook — whatever the environment configures."""
    if not is_demo_database(db):
        return settings
    log.warning("demo database: Stripe, email and outgoing webhooks are off in this process")
    return sandboxed(settings)


def meterbill_error_response(request: Request, exc: MeterbillError) -> JSONResponse:
    body = exc.details.get("body", {})
    if preferred_language(request) == "fr":
        body = exc.details.get("body_fr", body)  # e.g. a batch's reasons, in French
    return error_response(
        request,
        exc.status,
        exc.code,
        exc.message_fr,
        exc.message_en,
        headers=exc.details.get("headers"),
        **body,
    )


def create_app(
    settings: Settings | None = None,
    *,
    migrate: bool = True,
    clock: Callable[[], datetime] = utcnow,
) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.database_url)
        if migrate:
            upgrade(db.engine)
        served = _settings_for(db, settings)
        app.state.services = Services(served, db, StripeGateway(served), clock)
        _issue_waiting_documents(app.state.services)
        log.info("meterbill ready", extra={"database": str(db.engine.url)})
        try:
            yield
        finally:
            db.dispose()

    app = FastAPI(
        title="meterbill",
        version="0.1.0",
        description="Self-hosted billing for SaaS products: Stripe plans, metering, "
        "quotas and numbered invoices.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_openapi(app)
    install_docs(app)
    app.add_middleware(
        BodySizeLimit,
        limits=route_limits(settings.max_body_bytes, settings.body_limits),
        render=meterbill_error_response,
    )
    app.include_router(invoicing_router)
    app.include_router(billing_router)
    app.include_router(plans_router)
    app.include_router(usage_router)
    app.include_router(metering_router)
    from meterbill.console.routes import install as install_console  # imports app's helpers

    install_console(app)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    @raises(DatabaseUnavailable)
    def readyz(request: Request) -> JSONResponse:
        """The database answers (503 otherwise). `details` says what else an operator must
        fix without taking the service out of a load balancer: e.g. invoices waiting for
        the seller's identity (200, with `warnings`)."""
        services = request.app.state.services
        try:
            services.db.ping()
            with services.db.reading() as session:
                invoicing = invoicing_readiness(session, services.settings)
        except Exception as exc:
            log.exception("readiness check failed")
            raise DatabaseUnavailable() from exc
        body: dict[str, Any] = {"status": "ready", "details": {"invoicing": invoicing}}
        if invoicing["missing_settings"]:
            body["warnings"] = [seller_identity_warning(invoicing["missing_settings"])]
        return JSONResponse(body)

    @app.exception_handler(MeterbillError)
    async def meterbill_error(request: Request, exc: MeterbillError) -> JSONResponse:
        return meterbill_error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        language = preferred_language(request)
        errors = exc.errors()
        if any(error.get("type") == "json_invalid" for error in errors):
            error: MeterbillError = MalformedJson()
        else:
            error = ValidationFailed()
        details = [validation_detail(item, language) for item in errors]
        return error_response(
            request, error.status, error.code, error.message_fr, error.message_en, details=details
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, fr, en = _HTTP_ERRORS.get(
            exc.status_code, ("http_error", "Erreur HTTP", "HTTP error")
        )
        return error_response(
            request, exc.status_code, code, fr, en, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        error = InternalError()
        return error_response(request, 500, error.code, error.message_fr, error.message_en)

    return app
