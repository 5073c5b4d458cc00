"""Metering for WSGI apps (Flask, Django...): `app.wsgi_app = MeterbillWSGI(app.wsgi_app, ...)`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from meterbill.client.guard import BLOCKED_BODY, HARD, QuotaGuard

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


class MeterbillWSGI:
    """For each request `identify(environ)` names a user: answers 429 when the user's plan
    blocks at its hard limit, else records one event (batched in the background) and adds
    `X-Billing-Alert` to the response when a limit is near or reached. Requests without a
    user pass through untouched."""

    def __init__(
        self,
        app: Callable[[Environ, StartResponse], Iterable[bytes]],
        base_url: str,
        api_key: str,
        *,
        identify: Callable[[Environ], str | None],
        **options: Any,
    ) -> None:
        self.app = app
        self.identify = identify
        self.guard = QuotaGuard(base_url, api_key, **options)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        user_id = self.identify(environ)
        if not user_id:
            return self.app(environ, start_response)
        status = self.guard.status(user_id)
        if status is not None and not status.allowed:
            start_response(
                "429 Too Many Requests",
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(BLOCKED_BODY))),
                    ("X-Billing-Alert", HARD),
                ],
            )
            return [BLOCKED_BODY]
        self.guard.record(user_id, environ.get("PATH_INFO"))
        alert = status.alert if status else None
        if alert is None:
            return self.app(environ, start_response)

        def start_with_alert(status_line: str, headers: list[Any], exc_info: Any = None) -> Any:
            return start_response(status_line, [*headers, ("X-Billing-Alert", alert)], exc_info)

        return self.app(environ, start_with_alert)

    def close(self, timeout: float = 10.0) -> None:
        """Send the queued events (also done at interpreter exit)."""
        self.guard.close(timeout)
