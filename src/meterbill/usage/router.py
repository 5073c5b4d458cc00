"""The seed's consumption endpoint (end users), reading per-day totals."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from meterbill.auth.dependencies import CurrentUser, ServicesDep
from meterbill.usage.service import Consumption, monthly_consumption

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
                "metric": usage.metric,
                "message": template.format(pct=usage.usage_pct, metric=usage.metric),
                "current": usage.used,
                "limit": usage.limit,
            }
        )
    return {
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
            m.metric: {"used": m.used, "limit": m.limit, "usage_pct": m.usage_pct, "alert": m.alert}
            for m in report.metrics.values()
        },
        "alerts": alerts,
    }


def alert_header(report: Consumption) -> str | None:
    levels = {usage.alert for usage in report.metrics.values()}
    if "hard" in levels:
        return "hard_limit_reached"
    if "soft" in levels:
        return "soft_limit_warning"
    return None


@router.get("/consumption")
def consumption_status(
    user: CurrentUser, services: ServicesDep, response: Response, month: str | None = None
) -> dict[str, Any]:
    """This month's (or `month=YYYY-MM`'s) consumption against the effective plan's limits.

    Sets `X-Billing-Alert: soft_limit_warning` at the plan's alert ratio (80 %) and
    `hard_limit_reached` at 100 % of any metric.
    """
    now = services.now()
    with services.db.reading() as session:
        report = monthly_consumption(
            session, services.catalog, user.user_id, month or now.strftime("%Y-%m"), now
        )
    header = alert_header(report)
    if header:
        response.headers["X-Billing-Alert"] = header
    return consumption_body(report)
