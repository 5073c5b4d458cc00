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
from starlette.exceptions import HTTPException as StarletteHTTPException

from meterbill.billing.catalog import router as plans_router
from meterbill.billing.gateway import StripeGateway
from meterbill.billing.router import router as billing_router
from meterbill.config import Settings
from meterbill.db import Database, utcnow
from meterbill.docs_ui import install_docs
from meterbill.errors import MeterbillError, NotFound
from meterbill.invoicing.router import router as invoicing_router
from meterbill.logs import configure_logging
from meterbill.migrate import upgrade
from meterbill.openapi import (
    DatabaseUnavailable,
    InternalError,
    MalformedJson,
    MethodNotAllowed,
    PayloadTooLarge,
    ValidationFailed,
    install_openapi,
    raises,
)
from meterbill.services import Services
from meterbill.usage.router import metering_router
from meterbill.usage.router import router as usage_router
from meterbill.validation import validation_detail

log = logging.getLogger("meterbill.app")

_HTTP_ERRORS: dict[int, type[MeterbillError]] = {
    error.status: error for error in (NotFound, MethodNotAllowed, PayloadTooLarge)
}


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
        app.state.services = Services(settings, db, StripeGateway(settings), clock)
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
    app.include_router(invoicing_router)
    app.include_router(billing_router)
    app.include_router(plans_router)
    app.include_router(usage_router)
    app.include_router(metering_router)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    @raises(DatabaseUnavailable)
    def readyz(request: Request) -> dict[str, str]:
        """The database answers."""
        try:
            request.app.state.services.db.ping()
        except Exception as exc:
            log.exception("readiness check failed")
            raise DatabaseUnavailable() from exc
        return {"status": "ready"}

    @app.exception_handler(MeterbillError)
    async def meterbill_error(request: Request, exc: MeterbillError) -> JSONResponse:
        body = exc.details.get("body", {})
        if preferred_language(request) == "fr":
            body = exc.details.get("body_fr", body)
        return error_response(
            request,
            exc.status,
            exc.code,
            exc.message_fr,
            exc.message_en,
            headers=exc.details.get("headers"),
            **body,
        )

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
        known = _HTTP_ERRORS.get(exc.status_code)
        code, fr, en = (
            (known.code, known.message_fr, known.message_en)
            if known
            else ("http_error", "Erreur HTTP", "HTTP error")
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
