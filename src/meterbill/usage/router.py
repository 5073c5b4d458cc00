"""The seed's consumption endpoint (end users, reading per-day totals) and the metering API
(servers, with an API key): event ingestion, quota checks, atomic consume."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from meterbill.auth.dependencies import (
    PresentedIngestKey,
    PresentedReadKey,
    ServicesDep,
    TokenUser,
    any_api_key,
    register_user,
    user_matches,
)
from meterbill.auth.models import ApiKey
from meterbill.errors import InvalidMonth
from meterbill.openapi import raises
from meterbill.usage.errors import BatchTooLarge, InvalidUsageBatch, QuotaExceeded, UnknownMetric
from meterbill.usage.ingestion import (
    MAX_BATCH,
    ingest_document,
    parse_events,
    verify_ingest_key,
)
from meterbill.usage.quota import HARD_HEADER, SOFT_HEADER, check_now, consume_now
from meterbill.usage.schemas import NO_NUL, ConsumeIn, EventIn, IngestAnswer
from meterbill.usage.service import Consumption, read_consumption

router = APIRouter(prefix="/api/v1/billing", tags=["usage"])

_ALERT_TEXT = {
    ("api_calls", "hard"): "Limite mensuelle d'appels API atteinte.",
    ("api_calls", "soft"): "Appels API à {pct}% de la limite mensuelle.",
    ("tokens", "hard"): "Limite mensuelle de tokens atteinte.",
    ("tokens", "soft"): "Tokens à {pct}% de la limite mensuelle.",
    (None, "hard"): "Limite mensuelle atteinte pour {metric}.",
    (None, "soft"): "{metric} à {pct}% de la limite mensuelle.",
}


def consumption_body(report: Consumption) -> dict[str, Any]:
    api, tokens = report.metrics["api_calls"], report.metrics["tokens"]
    alerts = []
    for usage in report.metrics.values():
        if usage.alert is None:
            continue
        template = _ALERT_TEXT.get((usage.metric, usage.alert)) or _ALERT_TEXT[(None, usage.alert)]
        alerts.append(
            {
                "type": usage.alert,
                "level": ALERT_LEVELS[usage.alert],
                "metric": usage.metric,
                "message": template.format(pct=usage.usage_pct, metric=usage.metric),
                "current": usage.used,
                "limit": usage.limit,
            }
        )
    return {
        "alert": alert_header(report),
        "user_id": report.user_id,
        "plan": report.plan,
        "month": report.month,
        "consumption": {
            "total_api_calls": api.used,
            "limit_api_calls": api.limit,
            "usage_pct": api.usage_pct,
            "total_tokens": tokens.used,
            "limit_tokens": tokens.limit,
            "usage_pct_tokens": tokens.usage_pct,
        },
        "tokens": {
            "total_tokens": tokens.used,
            "limit_tokens": tokens.limit,
            "usage_pct": tokens.usage_pct,
        },
        "metrics": {
            m.metric: {
                "used": m.used,
                "limit": m.limit,
                "usage_pct": m.usage_pct,
                "alert": m.alert,
                "level": ALERT_LEVELS.get(m.alert or ""),
            }
            for m in report.metrics.values()
        },
        "alerts": alerts,
    }


# One vocabulary for alert levels: the seed's `X-Billing-Alert` values. The seed's
# `alerts[].type` ("soft"/"hard") stays; `level` beside it, the consumption's `alert` and
# /usage/check's `alert` all say the header's words.
ALERT_LEVELS = {"soft": SOFT_HEADER, "hard": HARD_HEADER}


def alert_header(report: Consumption) -> str | None:
    """The consumption's alert level: the most severe of its metrics'."""
    levels = {usage.alert for usage in report.metrics.values()}
    if "hard" in levels:
        return HARD_HEADER
    if "soft" in levels:
        return SOFT_HEADER
    return None


@router.get("/consumption")
@raises(InvalidMonth)
def consumption_status(
    user: TokenUser, services: ServicesDep, response: Response, month: str | None = None
) -> dict[str, Any]:
    """This month's (or `month=YYYY-MM`'s) consumption against the effective plan's limits.

    Sets `X-Billing-Alert: soft_limit_warning` at the plan's alert ratio (80 %) and
    `hard_limit_reached` at 100 % of any metric.
    """
    now = services.now()
    report, stored = read_consumption(
        services.db, services.catalog, user.user_id, month or now.strftime("%Y-%m"), now
    )
    if not stored.exists or not user_matches(user, stored.email, stored.locale):
        register_user(services, user)  # the token's first request, or new email/locale
    header = alert_header(report)
    if header:
        response.headers["X-Billing-Alert"] = header
    return consumption_body(report)


# The server-to-server metering API (API key): ingestion and quota decisions.
metering_router = APIRouter(prefix="/api/v1/usage", tags=["usage"])

_EVENTS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["events"],
                    "properties": {
                        "events": {
                            "type": "array",
                            "maxItems": MAX_BATCH,
                            "items": EventIn.model_json_schema(),
                        }
                    },
                }
            }
        },
    }
}


@metering_router.post("/events", status_code=202, openapi_extra=_EVENTS_BODY)
@raises(InvalidUsageBatch, BatchTooLarge)
async def ingest_events(
    request: Request, api_key: PresentedIngestKey, services: ServicesDep
) -> IngestAnswer:
    """Record a batch of up to 10,000 events. `id` is the idempotency key: an event sent
    twice counts once. The batch is validated as a whole first: one bad event gets 422
    naming each bad event's index and reason, and nothing is stored."""
    await run_in_threadpool(verify_ingest_key, services.db, api_key)  # before the body
    raw = await request.body()
    # Parsing and validating 10,000 events takes tens of milliseconds: not on the event loop.
    result = await run_in_threadpool(
        ingest_document, services.db, services.catalog, raw, services.now()
    )
    return IngestAnswer(received=result.received, new=result.new, duplicates=result.duplicates)


@metering_router.get("/ping")
def ping(key: Annotated[ApiKey, Depends(any_api_key)]) -> dict[str, Any]:
    """Is this API key accepted, and with which scopes? The client middlewares call it at
    start-up to tell a misconfiguration (401/403) from an outage."""
    return {"status": "ok", "key": key.name, "scopes": key.scopes.split()}


@metering_router.get("/check")
@raises(UnknownMetric)
def check_usage(
    user_id: Annotated[str, Query(min_length=1, max_length=255, pattern=NO_NUL)],
    metric: Annotated[str, Query(min_length=1, max_length=64, pattern=NO_NUL)],
    api_key: PresentedReadKey,
    services: ServicesDep,
    response: Response,
) -> dict[str, Any]:
    """May `user_id` consume `metric` now? `{allowed, used, limit, remaining, alert}` for the
    current UTC month; nothing is recorded."""
    quota = check_now(services.db, services.catalog, api_key, user_id, metric, services.now())
    if quota.alert:
        response.headers["X-Billing-Alert"] = quota.alert
    return quota.body()


@metering_router.post("/consume")
@raises(UnknownMetric, InvalidUsageBatch, QuotaExceeded)
def consume_usage(
    body: ConsumeIn, api_key: PresentedIngestKey, services: ServicesDep, response: Response
) -> dict[str, Any]:
    """Check the limit and record the event in one atomic step. When the plan blocks and
    the event would go past the limit: 429, `X-Billing-Alert: hard_limit_reached`, nothing
    recorded. Sending the same `id` again records nothing more."""
    now = services.now()
    item = body.model_dump(exclude_none=True)
    item.setdefault("id", f"consume-{uuid.uuid4()}")
    item.setdefault("timestamp", now.isoformat())
    (event,) = parse_events([item], services.catalog, now)
    consumed = consume_now(services.db, services.catalog, api_key, event, now)
    if consumed.quota.alert:
        response.headers["X-Billing-Alert"] = consumed.quota.alert
    # `allowed` answers for this consumption (recorded, or recorded before: `duplicate`);
    # `used`, `remaining` and `alert` are the month as it now stands.
    answer = consumed.quota.body()
    return {**answer, "allowed": True, "id": event.id, "duplicate": consumed.duplicate}
