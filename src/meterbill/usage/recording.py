"""Recording usage events: raw rows for audit, per-day totals for reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from meterbill.auth.service import ensure_user
from meterbill.db import insert_for
from meterbill.usage.models import ConsumptionEvent, UsageDaily


@dataclass(frozen=True)
class UsageEvent:
    id: str
    user_id: str
    metric: str
    value: int
    timestamp: datetime
    endpoint: str | None = None


def record_usage(session: Session, events: list[UsageEvent], now: datetime) -> int:
    """Store the events not seen before and add them to the daily totals; returns how many
    were new. Duplicated ids (the idempotency key) are counted once."""
    insert = insert_for(session)
    new = 0
    for event in events:
        ensure_user(session, event.user_id)
        inserted = session.execute(
            insert(ConsumptionEvent)
            .values(
                event_id=event.id,
                user_id=event.user_id,
                metric=event.metric,
                value=event.value,
                date=event.timestamp,
                endpoint=event.endpoint,
                received_at=now,
            )
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(ConsumptionEvent.id)
        ).scalar_one_or_none()
        if inserted is None:
            continue
        new += 1
        session.execute(
            insert(UsageDaily)
            .values(
                user_id=event.user_id,
                metric=event.metric,
                day=event.timestamp.astimezone(UTC).date(),
                total=event.value,
                events=1,
            )
            .on_conflict_do_update(
                index_elements=["user_id", "metric", "day"],
                set_={
                    "total": UsageDaily.total + event.value,
                    "events": UsageDaily.events + 1,
                },
            )
        )
    return new
