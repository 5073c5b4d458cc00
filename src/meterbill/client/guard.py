"""What the middlewares share: who the user is, whether they may go on, and the event.

A quota answer is kept for `cache_seconds` per user, and the requests let through since
are added to it locally, so a busy user costs meterbill one check per period, not one per
request. When meterbill cannot be reached the request is let through (fail open) and its
event is queued until meterbill is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from meterbill.client.api import (
    AsyncMeterbillClient,
    MeterbillClient,
    MeterbillClientError,
    MeterbillConfigurationError,
    MeterbillUnavailable,
    QuotaStatus,
    usage_event,
)
from meterbill.client.buffer import EventBuffer

log = logging.getLogger("meterbill.client")

HARD = "hard_limit_reached"
BLOCKED_BODY = json.dumps(
    {"error": "Monthly limit reached / Limite mensuelle atteinte", "code": HARD}
).encode()


@dataclass
class _Cached:
    status: QuotaStatus | None  # None: meterbill was unreachable
    at: float
    since: int = 0  # requests let through since the answer


def local_status(status: QuotaStatus, since: int) -> QuotaStatus:
    """The cached answer with `since` more units counted locally."""
    if not since:
        return status
    used = status.used + since
    if status.limit is None:
        return replace(status, used=used)
    reached = used >= status.limit
    return replace(
        status,
        used=used,
        remaining=max(status.limit - used, 0),
        allowed=status.allowed and not (reached and status.on_limit == "block"),
        alert=HARD if reached else status.alert,
    )


class QuotaGuard:
    """Cached quota checks plus the event buffer, for one metric."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        metric: str = "api_calls",
        cache_seconds: float = 1.0,
        check_timeout: float = 1.0,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_backoff: float = 30.0,
        check_key: bool = True,
        buffer_path: str | None = None,
    ) -> None:
        self.metric = metric
        self.cache_seconds = cache_seconds
        self._check = MeterbillClient(base_url, api_key, timeout=check_timeout, retries=0)
        self._async_check: AsyncMeterbillClient | None = None
        self._base_url, self._api_key, self._timeout = base_url, api_key, check_timeout
        self.buffer = EventBuffer(
            MeterbillClient(base_url, api_key, retries=2),
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_backoff=max_backoff,
            path=buffer_path,
        )
        self._cache: dict[str, _Cached] = {}
        self._refused = False
        if check_key:
            self.check_key()

    def check_key(self) -> None:
        """The start-up check: a key meterbill refuses (401/403) stops the host now, loudly;
        meterbill being unreachable is an outage, so the host starts and queues events."""
        # A longer timeout than a quota check's: a slow answer must not pass for an outage.
        with MeterbillClient(self._base_url, self._api_key, timeout=10.0, retries=1) as client:
            self._ping(client)

    def _ping(self, client: MeterbillClient) -> None:
        try:
            scopes = client.ping().get("scopes", [])
            missing = sorted({"ingest", "read"} - set(scopes))
            if missing:
                raise MeterbillConfigurationError(
                    403, {"code": "insufficient_scope", "error": f"key lacks {missing}"}
                )
        except MeterbillConfigurationError as exc:
            log.critical("meterbill refused the API key at start-up: %s", exc)
            self.buffer.close(timeout=0)
            raise
        except MeterbillUnavailable:
            log.warning("meterbill unreachable at start-up; events will be queued")

    def _fresh(self, user_id: str) -> _Cached | None:
        entry = self._cache.get(user_id)
        if entry and time.monotonic() - entry.at < self.cache_seconds:
            return entry
        return None

    def _store(self, user_id: str, status: QuotaStatus | None) -> None:
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[user_id] = _Cached(status, time.monotonic())

    def status(self, user_id: str) -> QuotaStatus | None:
        """The user's standing (None when meterbill cannot say)."""
        entry = self._fresh(user_id)
        if entry is None:
            self._store(user_id, self._ask(user_id))
            entry = self._cache[user_id]
        return local_status(entry.status, entry.since) if entry.status else None

    async def status_async(self, user_id: str) -> QuotaStatus | None:
        entry = self._fresh(user_id)
        if entry is None:
            if self._async_check is None:
                self._async_check = AsyncMeterbillClient(
                    self._base_url, self._api_key, timeout=self._timeout, retries=0
                )
            try:
                status: QuotaStatus | None = await self._async_check.check(user_id, self.metric)
            except (MeterbillUnavailable, MeterbillClientError) as exc:
                self._check_failed(exc)
                status = None
            self._store(user_id, status)
            entry = self._cache[user_id]
        return local_status(entry.status, entry.since) if entry.status else None

    def _ask(self, user_id: str) -> QuotaStatus | None:
        try:
            return self._check.check(user_id, self.metric)
        except (MeterbillUnavailable, MeterbillClientError) as exc:
            self._check_failed(exc)
            return None

    def _check_failed(self, exc: Exception) -> None:
        if isinstance(exc, MeterbillConfigurationError):
            if not self._refused:  # a configuration error: said once, loudly
                log.critical("meterbill refused the API key's quota check: %s", exc)
            self._refused = True
            return
        log.warning("meterbill check failed, letting the request through: %s", exc)

    def record(self, user_id: str, endpoint: str | None) -> None:
        """Queue this request's event and count it in the cached answer."""
        self.buffer.add(usage_event(user_id, self.metric, 1, endpoint=endpoint))
        entry = self._cache.get(user_id)
        if entry is not None:
            entry.since += 1

    def close(self, timeout: float = 10.0) -> None:
        self.buffer.close(timeout)
        self._check.close()

    async def aclose(self, timeout: float = 10.0) -> None:
        """`close` for asyncio hosts: the final send runs in a thread."""
        if self._async_check is not None:
            await self._async_check.aclose()
            self._async_check = None
        await asyncio.to_thread(self.close, timeout)


def header_identity(name: str) -> Callable[[Any], str | None]:
    """An `identify` that reads the user id from a request header (WSGI or ASGI), e.g. one
    set by the host's authentication layer. Use it only behind something that sets it."""
    wsgi_key = "HTTP_" + name.upper().replace("-", "_")
    asgi_key = name.lower().encode()

    def identify(request: Any) -> str | None:
        if "headers" in request and "type" in request:  # an ASGI scope
            for key, value in request["headers"]:
                if key == asgi_key:
                    return str(value.decode("latin-1")) or None
            return None
        return request.get(wsgi_key) or None

    return identify
