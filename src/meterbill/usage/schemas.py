"""Pydantic shapes of the metering API (documentation, and the consume request)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

# Text without NUL characters, which PostgreSQL cannot store.
NO_NUL = r"^[^\x00]*$"


class EventIn(BaseModel):
    """One usage event. `id` is the idempotency key; `timestamp` is ISO 8601 with an
    offset (or Unix seconds), at most 35 days old and 5 minutes ahead."""

    id: str = Field(min_length=1, max_length=255, pattern=NO_NUL)
    user_id: str = Field(min_length=1, max_length=255, pattern=NO_NUL)
    metric: str = Field(min_length=1, max_length=64, pattern=NO_NUL)
    value: int = Field(1, ge=0, le=2**63 - 1)
    timestamp: str | float
    endpoint: str | None = Field(None, max_length=512, pattern=NO_NUL)


class ConsumeIn(BaseModel):
    """A consumption to check and record at once; `id` (optional) makes retries safe."""

    id: str | None = Field(None, min_length=1, max_length=255, pattern=NO_NUL)
    user_id: str = Field(min_length=1, max_length=255, pattern=NO_NUL)
    metric: str = Field("api_calls", min_length=1, max_length=64, pattern=NO_NUL)
    value: int = Field(1, ge=0, le=2**63 - 1)
    timestamp: Any = None
    endpoint: str | None = Field(None, max_length=512, pattern=NO_NUL)


class IngestAnswer(BaseModel):
    received: int
    new: int
    duplicates: int
