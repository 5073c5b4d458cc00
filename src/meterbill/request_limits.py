"""Request bodies have a size cap per route: a body over it gets a 413 without meterbill
reading more than the cap.

A pure ASGI middleware: a declared ``Content-Length`` over the cap is refused before the
application runs; a body without one (chunked) is counted as it streams in, and the
read that crosses the cap aborts the request. uvicorn stops reading the socket while a
body chunk waits for the application (flow control), so what the server holds stays
near the cap whatever the client sends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meterbill.errors import PayloadTooLarge

KIB = 1024
MIB = 1024 * KIB

# A usage batch of 10,000 events whose every field is at its longest (ids of 255
# characters, a 512-character endpoint, 19-digit values, ISO timestamps with
# microseconds and an offset) is 12.2 MB of JSON: 16 MiB leaves room for indentation.
USAGE_EVENTS_BODY = 16 * MIB
# Stripe's events carry one API object each, whose lists are truncated (10 items
# embedded, `has_more` for the rest) and whose free text is bounded (metadata: 50 keys of
# 40 characters with values of 500; descriptions: 5,000 characters): tens of kilobytes.
# 1 MiB is a generous margin over the largest we have seen.
STRIPE_WEBHOOK_BODY = 1 * MIB
# Everything else takes a small JSON object (a plan name, one usage event).
DEFAULT_BODY = 64 * KIB

DEFAULT_ROUTE_LIMITS: dict[str, int] = {
    "/api/v1/usage/events": USAGE_EVENTS_BODY,
    "/api/v1/billing/webhook": STRIPE_WEBHOOK_BODY,
}


@dataclass(frozen=True)
class BodyLimits:
    """The cap of each route (by exact path) and the cap of every other route."""

    default: int = DEFAULT_BODY
    routes: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_ROUTE_LIMITS))

    def for_path(self, path: str) -> int:
        return self.routes.get(path.rstrip("/") or "/", self.default)


ErrorRenderer = Callable[[Request, PayloadTooLarge], Response]


class BodySizeLimit:
    """Refuse (413) any request body longer than its route's cap."""

    def __init__(self, app: ASGIApp, limits: BodyLimits, render: ErrorRenderer) -> None:
        self.app = app
        self.limits = limits
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.limits.for_path(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > cap:
            await self._refuse(scope, send, cap)
            return

        state = _Stream(cap)

        async def counted_receive() -> Message:
            if state.over:
                raise PayloadTooLarge(cap)
            message = await receive()
            if message["type"] == "http.request":
                state.received += len(message.get("body", b""))
                if state.received > cap:
                    state.over = True
                    raise PayloadTooLarge(cap)
            return message

        async def guarded_send(message: Message) -> None:
            if state.over:
                return  # whatever the app answers to an aborted read, the answer is ours
            if message["type"] == "http.response.start":
                state.started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not state.over:
                raise
        if state.over and not state.started:
            await self._refuse(scope, send, cap)

    async def _refuse(self, scope: Scope, send: Send, cap: int) -> None:
        response = self.render(Request(scope), PayloadTooLarge(cap))
        # The rest of the body is not wanted: close the connection after the answer.
        response.headers["connection"] = "close"
        await response(scope, _no_body, send)


@dataclass
class _Stream:
    cap: int
    received: int = 0
    over: bool = False
    started: bool = False


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


def _content_length(scope: Scope) -> int | None:
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def route_limits(default: int, overrides: Mapping[str, Any]) -> BodyLimits:
    """The built-in caps with the configured ones on top."""
    return BodyLimits(
        default, {**DEFAULT_ROUTE_LIMITS, **{k: int(v) for k, v in overrides.items()}}
    )
