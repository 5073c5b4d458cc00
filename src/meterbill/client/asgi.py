"""Metering for ASGI apps (FastAPI, Starlette): `app.add_middleware(MeterbillASGI, ...)`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from meterbill.client.guard import BLOCKED_BODY, HARD, QuotaGuard

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class MeterbillASGI:
    """The ASGI twin of MeterbillWSGI; queued events are sent when the app shuts down
    (lifespan), and at interpreter exit."""

    def __init__(
        self,
        app: ASGIApp,
        base_url: str,
        api_key: str,
        *,
        identify: Callable[[Scope], str | None],
        **options: Any,
    ) -> None:
        self.app = app
        self.identify = identify
        self.guard = QuotaGuard(base_url, api_key, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._flush_on_shutdown(send))
            return
        user_id = self.identify(scope) if scope["type"] == "http" else None
        if not user_id:
            await self.app(scope, receive, send)
            return
        status = await self.guard.status_async(user_id)
        if status is not None and not status.allowed:
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(BLOCKED_BODY)).encode()),
                        (b"x-billing-alert", HARD.encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": BLOCKED_BODY})
            return
        self.guard.record(user_id, scope.get("path"))
        alert = status.alert if status else None
        if alert is None:
            await self.app(scope, receive, send)
            return

        async def send_with_alert(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-billing-alert", alert.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_alert)

    def _flush_on_shutdown(self, send: Send) -> Send:
        async def send_after_flush(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.guard.aclose()
            await send(message)

        return send_after_flush
