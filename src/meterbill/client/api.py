"""HTTP clients for meterbill's metering API (sync and async), with safe retries.

Every event gets its id before the first attempt, so a retry after a timeout or a 5xx
sends the same ids and meterbill counts each event once.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

RETRY_STATUSES = frozenset({408, 500, 502, 503, 504})


class MeterbillClientError(Exception):
    """meterbill answered with an error that retrying will not fix (4xx)."""

    def __init__(self, status: int, body: Mapping[str, Any]) -> None:
        self.status = status
        self.body = dict(body)
        self.code = str(body.get("code", "error"))
        super().__init__(f"meterbill answered {status}: {body.get('error', body)}")


class MeterbillConfigurationError(MeterbillClientError):
    """meterbill refused the API key (401) or its scope (403): a configuration error that
    no retry will fix. Fix the key (or its scopes) and restart."""


class MeterbillUnavailable(Exception):
    """meterbill could not be reached, or kept failing, after every retry."""


@dataclass(frozen=True)
class QuotaStatus:
    """Where a user stands on a metric: meterbill's `check` / `consume` answer."""

    allowed: bool
    used: int
    limit: int | None
    remaining: int | None
    alert: str | None
    on_limit: str = "block"

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> QuotaStatus:
        return cls(
            allowed=bool(body.get("allowed", False)),
            used=int(body.get("used", 0)),
            limit=body.get("limit"),
            remaining=body.get("remaining"),
            alert=body.get("alert"),
            on_limit=str(body.get("on_limit", "block")),
        )


@dataclass(frozen=True)
class Ingested:
    received: int
    new: int
    duplicates: int


def usage_event(
    user_id: str,
    metric: str = "api_calls",
    value: int = 1,
    *,
    id: str | None = None,
    timestamp: datetime | None = None,
    endpoint: str | None = None,
) -> dict[str, Any]:
    """An event ready to send, with a fresh idempotency key unless one is given."""
    event: dict[str, Any] = {
        "id": id or str(uuid.uuid4()),
        "user_id": user_id,
        "metric": metric,
        "value": value,
        "timestamp": (timestamp or datetime.now(UTC)).isoformat(),
    }
    if endpoint:
        event["endpoint"] = endpoint[:512]
    return event


def _with_ids(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{**e, "id": e.get("id") or str(uuid.uuid4())} for e in events]


def _delay(attempt: int, backoff: float) -> float:
    return float(backoff * (2**attempt) * (0.5 + random.random()))


def _outcome(response: httpx.Response) -> dict[str, Any] | None:
    """The JSON body of a final answer; None when the request should be retried."""
    if response.status_code in RETRY_STATUSES:
        return None
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:200]}
    if response.status_code in (401, 403):
        raise MeterbillConfigurationError(response.status_code, body)
    if response.status_code >= 400 and response.status_code != 429:
        raise MeterbillClientError(response.status_code, body)
    return dict(body) if isinstance(body, dict) else {"body": body}


@dataclass(frozen=True)
class _Call:
    """One API call, built once so every retry sends exactly the same request."""

    method: str
    path: str
    options: dict[str, Any]


def _events_call(events: Iterable[Mapping[str, Any]]) -> _Call:
    return _Call("POST", "/api/v1/usage/events", {"json": {"events": _with_ids(events)}})


def _check_call(user_id: str, metric: str) -> _Call:
    return _Call("GET", "/api/v1/usage/check", {"params": {"user_id": user_id, "metric": metric}})


def _consume_call(user_id: str, metric: str, value: int, event_id: str | None) -> _Call:
    body = {"id": event_id or str(uuid.uuid4()), "user_id": user_id, "metric": metric}
    return _Call("POST", "/api/v1/usage/consume", {"json": {**body, "value": value}})


_PING = _Call("GET", "/api/v1/usage/ping", {})


@dataclass(frozen=True)
class BillingPageLink:
    """A signed link to a user's billing page, valid until `expires_at`."""

    url: str
    expires_at: datetime


def _page_link_call(user_id: str, locale: str | None, expires_in_minutes: int | None) -> _Call:
    body: dict[str, Any] = {"user_id": user_id}
    if locale:
        body["locale"] = locale
    if expires_in_minutes:
        body["expires_in_minutes"] = expires_in_minutes
    return _Call("POST", "/api/v1/billing/page-links", {"json": body})


def _page_link(body: Mapping[str, Any]) -> BillingPageLink:
    expires = datetime.fromisoformat(str(body["expires_at"]).replace("Z", "+00:00"))
    return BillingPageLink(str(body["url"]), expires.astimezone(UTC))


def _ingested(body: Mapping[str, Any]) -> Ingested:
    return Ingested(body["received"], body["new"], body["duplicates"])


def _consumed(body: Mapping[str, Any]) -> QuotaStatus:
    if body.get("code") == "hard_limit_reached":  # the 429: nothing was recorded
        return QuotaStatus(False, int(body.get("used", 0)), body.get("limit"), 0, body["code"])
    return QuotaStatus.from_body(body)


class _Settings:
    def __init__(self, base_url: str, api_key: str, timeout: float, retries: int, backoff: float):
        self.base_url = base_url.rstrip("/")
        self.headers = {"X-API-Key": api_key}
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff


class MeterbillClient:
    """Blocking client: `send_events`, `check`, `consume`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._s = _Settings(base_url, api_key, timeout, retries, backoff)
        self._http = httpx.Client(
            base_url=self._s.base_url,
            headers=self._s.headers,
            timeout=timeout,
            transport=transport,
        )

    def _call(self, call: _Call, retries: int | None = None) -> Any:
        attempts = (self._s.retries if retries is None else retries) + 1
        for attempt in range(attempts):
            try:
                body = _outcome(self._http.request(call.method, call.path, **call.options))
                if body is not None:
                    return body
            except httpx.TransportError:
                pass
            if attempt + 1 < attempts:
                time.sleep(_delay(attempt, self._s.backoff))
        raise MeterbillUnavailable(f"{call.method} {call.path} failed {attempts} time(s)")

    def ping(self, *, retries: int | None = None) -> dict[str, Any]:
        """Check the key at start-up: `{key, scopes}`; MeterbillConfigurationError when
        meterbill refuses it, MeterbillUnavailable when meterbill cannot be reached."""
        return dict(self._call(_PING, retries))

    def send_events(
        self, events: Iterable[Mapping[str, Any]], *, retries: int | None = None
    ) -> Ingested:
        """Record events (ids are added where missing, once, before any attempt)."""
        return _ingested(self._call(_events_call(events), retries))

    def check(
        self, user_id: str, metric: str = "api_calls", *, retries: int | None = None
    ) -> QuotaStatus:
        return QuotaStatus.from_body(self._call(_check_call(user_id, metric), retries))

    def consume(
        self, user_id: str, metric: str = "api_calls", value: int = 1, *, id: str | None = None
    ) -> QuotaStatus:
        """Check and record at once; `allowed` is False (nothing recorded) at a hard limit."""
        return _consumed(self._call(_consume_call(user_id, metric, value, id)))

    def billing_page_link(
        self, user_id: str, *, locale: str | None = None, expires_in_minutes: int | None = None
    ) -> BillingPageLink:
        """A signed link to the user's billing page (send the user there, or embed it)."""
        return _page_link(self._call(_page_link_call(user_id, locale, expires_in_minutes)))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MeterbillClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncMeterbillClient:
    """The same as MeterbillClient, for asyncio code."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._s = _Settings(base_url, api_key, timeout, retries, backoff)
        self._http = httpx.AsyncClient(
            base_url=self._s.base_url,
            headers=self._s.headers,
            timeout=timeout,
            transport=transport,
        )

    async def _call(self, call: _Call, retries: int | None = None) -> Any:
        attempts = (self._s.retries if retries is None else retries) + 1
        for attempt in range(attempts):
            try:
                body = _outcome(await self._http.request(call.method, call.path, **call.options))
                if body is not None:
                    return body
            except httpx.TransportError:
                pass
            if attempt + 1 < attempts:
                await asyncio.sleep(_delay(attempt, self._s.backoff))
        raise MeterbillUnavailable(f"{call.method} {call.path} failed {attempts} time(s)")

    async def ping(self, *, retries: int | None = None) -> dict[str, Any]:
        return dict(await self._call(_PING, retries))

    async def send_events(
        self, events: Iterable[Mapping[str, Any]], *, retries: int | None = None
    ) -> Ingested:
        return _ingested(await self._call(_events_call(events), retries))

    async def check(
        self, user_id: str, metric: str = "api_calls", *, retries: int | None = None
    ) -> QuotaStatus:
        return QuotaStatus.from_body(await self._call(_check_call(user_id, metric), retries))

    async def consume(
        self, user_id: str, metric: str = "api_calls", value: int = 1, *, id: str | None = None
    ) -> QuotaStatus:
        return _consumed(await self._call(_consume_call(user_id, metric, value, id)))

    async def billing_page_link(
        self, user_id: str, *, locale: str | None = None, expires_in_minutes: int | None = None
    ) -> BillingPageLink:
        """A signed link to the user's billing page (send the user there, or embed it)."""
        call = _page_link_call(user_id, locale, expires_in_minutes)
        return _page_link(await self._call(call))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncMeterbillClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
