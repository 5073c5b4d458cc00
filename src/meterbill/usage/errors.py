"""The metering API's errors (mapped to HTTP by app.py like every MeterbillError)."""

from __future__ import annotations

import math
import re
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
        french = [{**error, "reason": reason_fr(str(error.get("reason", "")))} for error in errors]
        super().__init__(body={"errors": errors}, body_fr={"errors": french})


# The French of each reason ingestion gives for a bad event (its English is the source).
_REASONS_FR: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), fr)
    for p, fr in [
        (r"^(\w+): a non-empty string is required$", "{0} : une chaîne non vide est requise"),
        (r"^(\w+): longer than (\d+) characters$", "{0} : plus de {1} caractères"),
        (r"^(\w+): contains a NUL character$", "{0} : contient un caractère NUL"),
        (r"^an event must be an object$", "un événement doit être un objet"),
        (r"^metric: unknown metric (.*)$", "metric : métrique inconnue {0}"),
        (
            r"^value: a non-negative integer is required$",
            "value : un entier positif ou nul est requis",
        ),
        (r"^timestamp: more than (\d+) days old$", "timestamp : plus de {0} jours dans le passé"),
        (
            r"^timestamp: more than (\d+) minutes in the future$",
            "timestamp : plus de {0} minutes dans le futur",
        ),
        (r"^timestamp: out of range$", "timestamp : hors limites"),
        (
            r"^timestamp: an ISO 8601 time or Unix seconds is required$",
            "timestamp : une date ISO 8601 ou des secondes Unix sont requises",
        ),
        (r"^timestamp: not an ISO 8601 time$", "timestamp : pas une date ISO 8601"),
        (
            r"^timestamp: a UTC offset \(or Z\) is required$",
            "timestamp : un décalage UTC (ou Z) est requis",
        ),
        (r'^expected \{"events": \[\.\.\.\]\}$', 'attendu : {{"events": [...]}}'),
    ]
]


def reason_fr(reason: str) -> str:
    """The French of a bad event's reason (the English when it is not in the table)."""
    for pattern, french in _REASONS_FR:
        match = pattern.match(reason)
        if match:
            return french.format(*match.groups())
    return reason


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
