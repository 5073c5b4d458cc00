"""The metering API's errors (mapped to HTTP by app.py like every MeterbillError)."""

from __future__ import annotations

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

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"Lot trop volumineux : {limit} événements au plus",
            f"Batch too large: at most {limit} events",
        )


class UnknownMetric(MeterbillError):
    status = 422
    code = "unknown_metric"

    def __init__(self, metric: str) -> None:
        super().__init__(f"Métrique inconnue : {metric}", f"Unknown metric: {metric}")


class QuotaExceeded(MeterbillError):
    """The plan blocks at its limit and this consumption would go past it."""

    status = 429
    code = "hard_limit_reached"

    def __init__(self, metric: str, used: int, limit: int) -> None:
        super().__init__(
            f"Limite mensuelle atteinte pour {metric}",
            f"Monthly limit reached for {metric}",
            headers={"X-Billing-Alert": "hard_limit_reached"},
            body={"metric": metric, "used": used, "limit": limit},
        )


class UsageTotalOverflow(MeterbillError):
    """A value, a batch's sum or a stored total would pass 2^63 - 1 (BIGINT), the largest
    total either database keeps exactly; nothing was recorded."""

    status = 422
    code = "usage_total_overflow"
    message_fr = (
        "Total d'usage hors limites : il dépasserait 9223372036854775807 ; rien n'a été enregistré"
    )
    message_en = "Usage total out of range: it would pass 9223372036854775807; nothing was recorded"


class RetentionTooShort(MeterbillError):
    """Retention would drop raw events of a month that may still receive events."""

    status = 422
    code = "retention_too_short"

    def __init__(self, keep_months: int) -> None:
        super().__init__(
            f"Rétention trop courte ({keep_months} mois) : les événements des 35 derniers "
            "jours doivent être gardés",
            f"Retention too short ({keep_months} months): the last 35 days of events must be kept",
        )
