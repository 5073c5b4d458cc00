"""The metering API's errors (mapped to HTTP by app.py like every MeterbillError)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from meterbill.errors import MeterbillError


class InvalidUsageBatch(MeterbillError):
    """Some events of a batch are invalid; `errors` names each one's index and reason."""

    status = 422
    code = "invalid_events"
    message_fr = "Événements invalides : aucun n'a été enregistré"
    message_en = "Invalid events: none was recorded"

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(body={"errors": errors})


class BatchTooLarge(MeterbillError):
    status = 413
    code = "batch_too_large"
    message_fr = "Lot trop volumineux : {limit} événements au plus"
    message_en = "Batch too large: at most {limit} events"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"Lot trop volumineux : {limit} événements au plus",
            f"Batch too large: at most {limit} events",
        )


class UnknownMetric(MeterbillError):
    status = 422
    code = "unknown_metric"
    message_fr = "Métrique inconnue : {metric}"
    message_en = "Unknown metric: {metric}"

    def __init__(self, metric: str) -> None:
        super().__init__(f"Métrique inconnue : {metric}", f"Unknown metric: {metric}")


class QuotaExceeded(MeterbillError):
    """The plan blocks at its limit and this consumption would go past it. `Retry-After`
    gives the seconds until the next month (UTC), when the limit starts over."""

    status = 429
    code = "hard_limit_reached"
    message_fr = "Limite mensuelle atteinte pour {metric}"
    message_en = "Monthly limit reached for {metric}"

    def __init__(self, metric: str, used: int, limit: int, now: datetime | None = None) -> None:
        moment = now or datetime.now(UTC)
        following = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
        retry_after = max(1, math.ceil((following - moment).total_seconds()))
        super().__init__(
            f"Limite mensuelle atteinte pour {metric}",
            f"Monthly limit reached for {metric}",
            headers={"X-Billing-Alert": "hard_limit_reached", "Retry-After": str(retry_after)},
            body={"metric": metric, "used": used, "limit": limit, "retry_after": retry_after},
        )
