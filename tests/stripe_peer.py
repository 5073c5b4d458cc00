"""A local Stripe peer for tests: localstripe plus the endpoints it lacks.

Two halves live in this module:

* **The launcher** (``python -m tests.stripe_peer --port P`` from the project root, or
  ``python tests/stripe_peer.py --port P`` from anywhere) serves localstripe's aiohttp app on
  ``127.0.0.1:P`` with:

  - persistence to the fixed ``/tmp/localstripe.pickle`` turned off, so parallel runs never
    share state;
  - extra Stripe API routes answering as Stripe's API reference documents:
    ``/v1/checkout/sessions`` (create, list, retrieve, expire), ``/v1/billing_portal/sessions``
    (create) and ``/v1/prices`` (create, retrieve, update, list; every recurring price is also
    a localstripe *plan* with the same id, so ``items[0][plan]=<price id>`` subscriptions work);
  - subscriptions answered in today's shape (each item's ``price`` with
    ``unit_amount_decimal`` and its period, the plan's ``amount_decimal``), added to
    localstripe's 2017-shaped answers;
  - Stripe's idempotency (``Idempotency-Key``: the first answer is saved and replayed, the
    same key with other parameters is an ``idempotency_error``, a key whose request still
    runs gets 409 ``idempotency_key_in_use``; localstripe ignores the header);
  - ``POST /v1/subscriptions/{id}`` price changes (``items[][price]``, ``proration_behavior``
    ``create_prorations|always_invoice|none``, ``payment_behavior`` with pending updates)
    and ``/v1/subscription_schedules`` (create ``from_subscription``, retrieve, update
    phases, release), which localstripe lacks or answers with a 500;
  - test controls under ``/_config/``: failure/latency injection (``/_config/fail``), request
    counters (``/_config/calls``) and webhook un-registration (``/_config/webhooks``), next to
    localstripe's own ``DELETE /_config/data`` and ``POST /_config/webhooks/{id}``.

  It prints ``READY <port>`` on stdout once listening (``--port 0`` picks a free port and
  reports it), then sends anything else it would print to stderr.

* **pytest helpers** (:func:`start_stripe_peer`, :class:`StripePeer`, :func:`sign_payload`).
  Importing this module has no side effects: localstripe and aiohttp are imported only by the
  launcher.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "INJECTED_FAILURE_MESSAGE",
    "StripePeer",
    "build_app",
    "main",
    "sign_payload",
    "start_stripe_peer",
]

#: Message of every injected failure. Distinctive so tests can assert it never reaches the
#: clients of the service under test (error bodies from Stripe must not be echoed verbatim).
INJECTED_FAILURE_MESSAGE = "Injected failure SECRET_STRIPE_TEXT"

#: Line the launcher prints (followed by the port) once it accepts connections.
READY_PREFIX = "READY"

_THIS_FILE = Path(__file__).resolve()

# ----------------------------------------------------------------------------------------
# pytest helpers (client side)
# ----------------------------------------------------------------------------------------


def sign_payload(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """Build a ``Stripe-Signature`` header value for ``payload`` as Stripe does.

    Stripe signs ``"<timestamp>.<raw body>"`` with HMAC-SHA256 keyed by the endpoint secret
    (``whsec_...``) and sends ``t=<timestamp>,v1=<hex digest>``.
    """
    ts = int(time.time()) if timestamp is None else timestamp
    signed = str(ts).encode("ascii") + b"." + payload
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"t={ts},v1={digest}"


@dataclass
class StripePeer:
    """Handle on a running launcher subprocess. Build it with :func:`start_stripe_peer`."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    _http: httpx.Client = field(repr=False)

    # -- lifecycle -----------------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the peer (SIGTERM, then SIGKILL after ``timeout``). Idempotent."""
        self._http.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        with contextlib.suppress(FileNotFoundError):
            self.log_path.unlink()

    def __enter__(self) -> StripePeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        """What the peer wrote to stderr so far (tracebacks, access log with ``--verbose``)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- controls ------------------------------------------------------------------------

    def reset(self) -> None:
        """Empty the store (customers, plans, prices, sessions...), failures and counters.

        Webhook registrations survive, as with localstripe's own ``DELETE /_config/data``;
        use :meth:`clear_webhooks` to drop them.
        """
        for path in ("/_config/data", "/_config/fail", "/_config/calls"):
            self._http.delete(path).raise_for_status()

    def fail(
        self,
        path_prefix: str,
        status: int = 500,
        delay: float = 0.0,
        count: int | None = None,
        *,
        method: str | None = None,
        error_type: str = "api_error",
    ) -> None:
        """Make requests whose path starts with ``path_prefix`` fail.

        Each matching request (any method unless ``method`` is given) waits ``delay`` seconds,
        then answers ``status`` with ``{"error": {"type": error_type, "message":
        INJECTED_FAILURE_MESSAGE}}``. A ``status`` below 400 means "slow, not failing": after
        the delay the request is served normally (a write the client gave up on still
        happens, as with a real timeout). ``count`` limits how many requests are affected
        (default: all, until :meth:`clear_failures`). A new rule for the same prefix and
        method replaces the previous one.
        """
        form: dict[str, str] = {
            "path_prefix": path_prefix,
            "status": str(status),
            "delay": str(delay),
            "type": error_type,
        }
        if count is not None:
            form["count"] = str(count)
        if method is not None:
            form["method"] = method
        self._http.post("/_config/fail", data=form).raise_for_status()

    def clear_failures(self) -> None:
        """Remove every failure rule."""
        self._http.delete("/_config/fail").raise_for_status()

    def calls(self, path_prefix: str = "/", method: str | None = None) -> int:
        """How many requests the peer received whose path starts with ``path_prefix``.

        ``method`` (e.g. ``"POST"``) narrows it; ``None`` counts every method. Injected
        failures count (the request was received); ``/_config/`` requests never do.
        """
        params = {"path_prefix": path_prefix}
        if method is not None:
            params["method"] = method
        response = self._http.get("/_config/calls", params=params)
        response.raise_for_status()
        return int(response.json()["count"])

    def reset_calls(self) -> None:
        """Zero the request counters only."""
        self._http.delete("/_config/calls").raise_for_status()

    def register_webhook(
        self,
        url: str,
        secret: str,
        events: list[str] | None = None,
        *,
        webhook_id: str | None = None,
    ) -> str:
        """Have localstripe POST its events to ``url``, signed with ``secret``.

        ``events`` filters by event type (default: all). Returns the registration id (give
        ``webhook_id`` to replace an earlier registration). Deliveries come about 1 s after
        the change, each on its own task, in no guaranteed order.
        """
        hook_id = webhook_id or "wh_" + secrets.token_hex(6)
        form: dict[str, str | list[str]] = {"url": url, "secret": secret}
        if events is not None:
            form["events[]"] = list(events)
        self._http.post(f"/_config/webhooks/{hook_id}", data=form).raise_for_status()
        return hook_id

    def clear_webhooks(self) -> None:
        """Drop every webhook registration."""
        self._http.delete("/_config/webhooks").raise_for_status()

    def complete_checkout(self, session_id: str) -> httpx.Response:
        """Pay the Checkout Session as its customer would on Stripe's page (a card that
        succeeds): a subscription session makes its subscription. Answers the session
        (200), or 400 when the session is not open (expired or already paid)."""
        return self._http.post(f"/_config/checkout/sessions/{session_id}/complete")


def start_stripe_peer(
    *,
    port: int = 0,
    timeout: float = 20.0,
    verbose: bool = False,
) -> StripePeer:
    """Start the launcher in a subprocess and wait until it answers.

    ``port=0`` (the default) lets the launcher bind a free port itself and report it, which
    has no window in which another process could grab a port picked in advance. The
    subprocess runs this file by absolute path with the current interpreter, so the caller's
    working directory does not matter. Its stderr goes to a temporary file
    (:attr:`StripePeer.log_path`, removed by :meth:`StripePeer.stop`).
    """
    log_fd, log_name = tempfile.mkstemp(prefix="stripe-peer-", suffix=".log")
    log_path = Path(log_name)
    cmd = [
        sys.executable,
        str(_THIS_FILE),
        "--port",
        str(port),
        "--parent-pid",
        str(os.getpid()),
    ]
    if verbose:
        cmd.append("--verbose")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_fd,
            env=env,
            cwd=str(_THIS_FILE.parent),
        )
    finally:
        os.close(log_fd)

    def fail_start(reason: str) -> RuntimeError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
        log = log_path.read_text(errors="replace")[-4000:]
        log_path.unlink(missing_ok=True)
        return RuntimeError(f"stripe peer did not start: {reason}\n--- peer stderr ---\n{log}")

    # Read stdout on a thread so the wait has a deadline even if the child hangs silently.
    lines: queue.Queue[bytes] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def read_first_line() -> None:
        lines.put(stdout.readline())

    threading.Thread(target=read_first_line, daemon=True).start()
    try:
        line = lines.get(timeout=timeout).decode("utf-8", "replace").strip()
    except queue.Empty:
        raise fail_start(f"no {READY_PREFIX} line within {timeout} s") from None
    parts = line.split()
    if len(parts) != 2 or parts[0] != READY_PREFIX or not parts[1].isdigit():
        raise fail_start(f"unexpected first line {line!r}")

    actual_port = int(parts[1])
    url = f"http://127.0.0.1:{actual_port}"
    return StripePeer(
        url=url,
        port=actual_port,
        process=process,
        log_path=log_path,
        _http=httpx.Client(base_url=url, timeout=10.0),
    )


# ----------------------------------------------------------------------------------------
# The launcher (server side). Everything below imports aiohttp/localstripe lazily.
# ----------------------------------------------------------------------------------------

_Json = dict[str, Any]
_Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


@dataclass
class _FailureRule:
    path_prefix: str
    status: int
    delay: float
    remaining: int | None  # None: unlimited
    method: str | None  # None: any method
    error_type: str

    def matches(self, method: str, path: str) -> bool:
        return path.startswith(self.path_prefix) and self.method in (None, method)


@dataclass
class _ControlState:
    """In-memory test controls of one launcher process."""

    failures: list[_FailureRule] = field(default_factory=list)
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)  # (method, path) -> n

    def take_failure(self, method: str, path: str) -> _FailureRule | None:
        """First rule matching the request, consuming one of its ``count`` if limited."""
        for rule in self.failures:
            if not rule.matches(method, path):
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self.failures.remove(rule)
            return rule
        return None

    def count_calls(self, path_prefix: str, method: str | None) -> int:
        return sum(
            n
            for (m, p), n in self.calls.items()
            if p.startswith(path_prefix) and method in (None, m)
        )


def _random_id(prefix: str, length: int = 24) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


def _stripe_error(
    status: int,
    message: str,
    *,
    error_type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> web.Response:
    """An error response in the shape Stripe documents (``{"error": {...}}``)."""
    from aiohttp import web

    error: _Json = {"type": error_type, "message": message}
    if param is not None:
        error["param"] = param
    if code is not None:
        error["code"] = code
    # Real Stripe sends a Request-Id on every answer; the SDK puts it on the exception.
    return web.json_response(
        {"error": error}, status=status, headers={"Request-Id": _random_id("req_", 14)}
    )


def _missing_param(name: str) -> web.Response:
    return _stripe_error(
        400, f"Missing required param: {name}.", param=name, code="parameter_missing"
    )


def _no_such(kind: str, ident: object, param: str, status: int = 400) -> web.Response:
    return _stripe_error(status, f"No such {kind}: '{ident}'", param=param, code="resource_missing")


def _to_int(value: object) -> int | None:
    """Form values arrive as strings; ``None`` when absent or not an integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _to_bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _metadata(value: object) -> dict[str, str]:
    """``metadata[k]=v`` unflattens to a dict; the SDK sends ``metadata=""`` to clear it."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    return {}


def _disable_persistence(store_cls: Any) -> None:
    """localstripe pickles its store to the fixed ``/tmp/localstripe.pickle`` on every
    change (``Store.__setitem__``/``__delitem__`` and a middleware call ``dump_to_disk``).
    Make both disk operations no-ops so concurrent test runs never share or clobber state."""

    def _no_op(self: object) -> None:
        return None

    store_cls.dump_to_disk = _no_op
    store_cls.try_load_from_disk = _no_op


def build_app() -> web.Application:
    """localstripe's app, with persistence off and the extra routes and middleware added.

    Mutates localstripe's module-level app, so call it once per process (the launcher does).
    """
    from aiohttp import web
    from localstripe import errors as ls_errors
    from localstripe import resources as ls
    from localstripe import server as ls_server
    from localstripe import webhooks as ls_webhooks

    _disable_persistence(ls.Store)
    store: dict[str, Any] = ls.store
    control = _ControlState()
    app: web.Application = ls_server.app

    async def form(request: web.Request) -> _Json:
        """Form or JSON body, with ``a[b][0][c]`` keys unflattened (localstripe's parser)."""
        data = await ls_server.get_post_data(request)
        return dict(data) if isinstance(data, dict) else {}

    def query(request: web.Request) -> _Json:
        data = ls_server.unflatten_data(request.query)
        return dict(data) if isinstance(data, dict) else {}

    def json_ok(body: object) -> web.Response:
        return web.json_response(body, headers={"Request-Id": _random_id("req_", 14)})

    # Our objects live in localstripe's store under "<object>:<id>" keys, like its own, so
    # its DELETE /_config/data clears them too. localstripe only ever looks keys up by its
    # own object names ("plan:", "customer:", ...), which these never collide with.
    def customer_exists(customer_id: object) -> bool:
        return isinstance(customer_id, str) and f"customer:{customer_id}" in store

    def find_price(price_id: str) -> _Json | None:
        """A price created through /v1/prices, or a localstripe plan seen as a price."""
        price = store.get(f"price:{price_id}")
        if isinstance(price, dict):
            return price
        plan = store.get(f"plan:{price_id}")
        if plan is None:
            return None
        return {
            "id": plan.id,
            "type": "recurring",
            "unit_amount": plan.amount,
            "currency": plan.currency,
        }

    # -- middleware: call counting and failure injection ------------------------------------

    @web.middleware
    async def control_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_config/"):
            return await handler(request)
        control.calls[(request.method, path)] += 1
        rule = control.take_failure(request.method, path)
        if rule is not None:
            keyed = "Idempotency-Key" in request.headers and request.method in ("POST", "DELETE")
            if rule.status < 400 and keyed:
                # Slow, not failing: Stripe's processing time, spent while the request's
                # idempotency key is in use (see idempotency_middleware).
                request["processing_delay"] = rule.delay
            elif rule.delay > 0:
                await asyncio.sleep(rule.delay)
            if rule.status >= 400:
                return _stripe_error(
                    rule.status, INJECTED_FAILURE_MESSAGE, error_type=rule.error_type
                )
        return await handler(request)

    # Outermost, ahead of localstripe's error/auth/save middlewares, so failures apply to
    # every route (localstripe's and ours) and even to unauthenticated requests.
    app.middlewares.insert(0, control_middleware)

    # -- subscriptions in today's shape ----------------------------------------------------

    def todays_subscription(sub: _Json) -> None:
        """Add what Stripe's current subscription object has and localstripe's lacks: each
        item's `price` (with `unit_amount_decimal`, which the SDK turns into a Decimal)
        and period, and the plan's `amount_decimal`."""
        if sub.get("object") != "subscription":
            return
        items = (sub.get("items") or {}).get("data") or []
        for item in items:
            plan = item.get("plan") or {}
            if isinstance(plan, dict) and plan.get("amount") is not None:
                plan.setdefault("amount_decimal", str(plan["amount"]))
            price = find_price(str(plan.get("id"))) if isinstance(plan, dict) else None
            if price is not None and "price" not in item:
                item["price"] = {
                    "object": "price",
                    "unit_amount_decimal": str(price.get("unit_amount")),
                    **price,
                }
            for key in ("current_period_start", "current_period_end"):
                if sub.get(key) is not None:
                    item.setdefault(key, sub[key])
        if isinstance(sub.get("plan"), dict) and sub["plan"].get("amount") is not None:
            sub["plan"].setdefault("amount_decimal", str(sub["plan"]["amount"]))

    @web.middleware
    async def todays_shape_middleware(
        request: web.Request, handler: _Handler
    ) -> web.StreamResponse:
        response = await handler(request)
        if not (
            request.path.startswith("/v1/subscriptions")
            and isinstance(response, web.Response)
            and response.content_type == "application/json"
            and response.status == 200
            and response.text
        ):
            return response
        body = json.loads(response.text)
        for sub in body.get("data", []) if body.get("object") == "list" else [body]:
            if isinstance(sub, dict):
                todays_subscription(sub)
        return web.json_response(body, headers={"Request-Id": _random_id("req_", 14)})

    app.middlewares.insert(1, todays_shape_middleware)

    # -- /v1/checkout/sessions -------------------------------------------------------------

    hosted_ui_modes = ("hosted", "hosted_page")
    known_ui_modes = (*hosted_ui_modes, "embedded", "embedded_page", "custom", "elements")

    async def create_checkout_session(request: web.Request) -> web.Response:
        data = await form(request)
        customer = data.get("customer")
        if customer is not None and not customer_exists(customer):
            return _no_such("customer", customer, "customer")

        mode = data.get("mode")
        if not mode:
            return _missing_param("mode")
        if mode not in ("payment", "setup", "subscription"):
            return _stripe_error(
                400,
                f"Invalid mode: must be one of payment, setup, or subscription (got {mode!r})",
                param="mode",
            )

        ui_mode = data.get("ui_mode") or "hosted"
        if ui_mode not in known_ui_modes:
            return _stripe_error(400, f"Invalid ui_mode: {ui_mode!r}", param="ui_mode")
        hosted = ui_mode in hosted_ui_modes
        success_url = data.get("success_url")
        return_url = data.get("return_url")
        if hosted and not success_url:
            return _missing_param("success_url")
        if not hosted and success_url:
            return _stripe_error(
                400,
                f"success_url is not allowed when ui_mode is {ui_mode}; use return_url.",
                param="success_url",
            )
        if not hosted and not return_url and data.get("redirect_on_completion") != "never":
            return _missing_param("return_url")

        # Line items: every referenced price must exist, as with real Stripe.
        raw_items = data.get("line_items") or []
        if not isinstance(raw_items, list) or not all(isinstance(i, dict) for i in raw_items):
            return _stripe_error(400, "Invalid array", param="line_items")
        if mode != "setup" and not raw_items:
            return _missing_param("line_items")
        amount: int | None = 0
        currency = data.get("currency")
        has_recurring = False
        for index, item in enumerate(raw_items):
            quantity = _to_int(item.get("quantity", 1)) or 1
            price_id = item.get("price")
            if isinstance(price_id, str):
                price = find_price(price_id)
                if price is None:
                    return _no_such("price", price_id, f"line_items[{index}][price]")
            elif isinstance(item.get("price_data"), dict):
                price_data = item["price_data"]
                price = {
                    "type": "recurring" if "recurring" in price_data else "one_time",
                    "unit_amount": _to_int(price_data.get("unit_amount")),
                    "currency": price_data.get("currency"),
                }
            else:
                return _missing_param(f"line_items[{index}][price]")
            has_recurring = has_recurring or price["type"] == "recurring"
            currency = currency or price["currency"]
            unit_amount = price["unit_amount"]
            amount = (
                None if amount is None or unit_amount is None else amount + unit_amount * quantity
            )
        if mode == "subscription" and not has_recurring:
            return _stripe_error(
                400,
                "You must provide at least one recurring price in `subscription` mode "
                "when using prices.",
                param="line_items",
            )

        created = int(time.time())
        expires_at = _to_int(data.get("expires_at")) or created + 24 * 3600
        session_id = _random_id("cs_test_", 58)
        metadata = _metadata(data.get("metadata"))
        session: _Json = {
            "id": session_id,
            "object": "checkout.session",
            "url": f"https://checkout.stripe.com/c/pay/{session_id}" if hosted else None,
            "client_secret": None if hosted else f"{session_id}_secret_{_random_id('', 24)}",
            "ui_mode": ui_mode,
            "mode": mode,
            "status": "open",
            "payment_status": "no_payment_required" if mode == "setup" else "unpaid",
            "customer": customer,
            "customer_email": data.get("customer_email"),
            "client_reference_id": data.get("client_reference_id"),
            "metadata": metadata,
            "success_url": success_url,
            "cancel_url": data.get("cancel_url"),
            "return_url": return_url,
            "currency": currency if mode != "setup" else data.get("currency"),
            "amount_subtotal": amount if mode != "setup" else None,
            "amount_total": amount if mode != "setup" else None,
            "allow_promotion_codes": _to_bool(data.get("allow_promotion_codes")),
            "locale": data.get("locale"),
            "subscription": None,
            "payment_intent": None,
            "setup_intent": None,
            "invoice": None,
            "created": created,
            "expires_at": expires_at,
            "livemode": False,
        }
        store[f"checkout.session:{session_id}"] = session
        # What paying the session buys (the session object itself shows neither).
        subscription_data = data.get("subscription_data")
        store[f"checkout.session_purchase:{session_id}"] = {
            "items": [
                {"plan": item.get("price"), "quantity": _to_int(item.get("quantity", 1)) or 1}
                for item in raw_items
                if isinstance(item.get("price"), str)
            ],
            "metadata": _metadata(
                subscription_data.get("metadata") if isinstance(subscription_data, dict) else None
            ),
        }
        return json_ok(session)

    def get_checkout_session(session_id: str) -> _Json | None:
        session = store.get(f"checkout.session:{session_id}")
        return session if isinstance(session, dict) else None

    async def retrieve_checkout_session(request: web.Request) -> web.Response:
        session_id = request.match_info["id"]
        session = get_checkout_session(session_id)
        if session is None:
            return _no_such("checkout.session", session_id, "session", status=404)
        return json_ok(session)

    async def expire_checkout_session(request: web.Request) -> web.Response:
        session_id = request.match_info["id"]
        session = get_checkout_session(session_id)
        if session is None:
            return _no_such("checkout.session", session_id, "session", status=404)
        if session["status"] != "open":
            return _stripe_error(
                400,
                f'Only Checkout Sessions with a status in ["open"] can be expired. '
                f'This Checkout Session has a status of "{session["status"]}".',
            )
        session["status"] = "expired"
        return json_ok(session)

    async def list_checkout_sessions(request: web.Request) -> web.Response:
        """Newest first, filtered by the documented `customer`, `status`, `subscription`
        and `payment_intent`, paged by `limit`, `starting_after` and `ending_before`."""
        params = query(request)
        sessions = [
            dict(v)
            for k, v in store.items()
            if k.startswith("checkout.session:") and isinstance(v, dict)
        ]
        status = params.get("status")
        if status is not None and status not in ("open", "complete", "expired"):
            return _stripe_error(
                400,
                f"Invalid status: must be one of open, complete, or expired (got {status!r})",
                param="status",
            )
        for name in ("customer", "status", "subscription", "payment_intent"):
            if name in params:
                sessions = [s for s in sessions if s.get(name) == params[name]]
        sessions.reverse()  # newest first, as Stripe lists (the store keeps creation order)
        ids = [s["id"] for s in sessions]
        if params.get("starting_after") in ids:
            sessions = sessions[ids.index(params["starting_after"]) + 1 :]
        elif params.get("ending_before") in ids:
            sessions = sessions[: ids.index(params["ending_before"])]
        limit = _to_int(params.get("limit")) or 10
        if not 1 <= limit <= 100:
            return _stripe_error(400, "Invalid limit: must be between 1 and 100", param="limit")
        return json_ok(
            {
                "object": "list",
                "url": "/v1/checkout/sessions",
                "has_more": len(sessions) > limit,
                "data": sessions[:limit],
            }
        )

    async def complete_checkout_session(request: web.Request) -> web.Response:
        """Test control: the customer pays the session on Stripe's hosted page (a card that
        succeeds), which creates the subscription. An expired or completed session cannot
        be paid: 400, as the hosted page refuses it."""
        session_id = request.match_info["id"]
        session = get_checkout_session(session_id)
        if session is None:
            return _no_such("checkout.session", session_id, "session", status=404)
        if session["status"] != "open":
            return _stripe_error(
                400,
                "This Checkout Session can no longer be paid: its status is "
                f'"{session["status"]}".',
            )
        purchase = store.get(f"checkout.session_purchase:{session_id}") or {}
        if session["mode"] == "subscription":
            card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
            method = ls.PaymentMethod._api_create(type="card", card=card)
            attached = ls.PaymentMethod._api_attach(method.id, customer=session["customer"])
            ls.Customer._api_update(
                session["customer"], invoice_settings={"default_payment_method": attached.id}
            )
            sub = ls.Subscription._api_create(
                customer=session["customer"],
                items=purchase.get("items") or [],
                metadata=purchase.get("metadata") or {},
            )
            session.update(subscription=sub.id, invoice=sub.latest_invoice)
        session.update(status="complete", payment_status="paid")
        return json_ok(session)

    # -- /v1/billing_portal/sessions -------------------------------------------------------

    # One default portal configuration per process, as an account has.
    portal_configuration = _random_id("bpc_", 24)

    async def create_portal_session(request: web.Request) -> web.Response:
        data = await form(request)
        customer = data.get("customer")
        if not customer:
            return _missing_param("customer")
        if not customer_exists(customer):
            return _no_such("customer", customer, "customer")
        session_id = _random_id("bps_", 24)
        session: _Json = {
            "id": session_id,
            "object": "billing_portal.session",
            "configuration": data.get("configuration") or portal_configuration,
            "created": int(time.time()),
            "customer": customer,
            "flow": None,
            "livemode": False,
            "locale": data.get("locale"),
            "on_behalf_of": None,
            "return_url": data.get("return_url"),
            "url": f"https://billing.stripe.com/p/session/{session_id}",
        }
        store[f"billing_portal.session:{session_id}"] = session
        return json_ok(session)

    # -- /v1/prices ------------------------------------------------------------------------

    def lookup_key_owner(lookup_key: str) -> _Json | None:
        for key, value in store.items():
            if key.startswith("price:") and value.get("lookup_key") == lookup_key:
                return dict(value)
        return None

    async def create_price(request: web.Request) -> web.Response:
        data = await form(request)
        currency = data.get("currency")
        if not currency:
            return _missing_param("currency")
        unit_amount = _to_int(data.get("unit_amount"))
        if unit_amount is None or unit_amount < 0:
            return _missing_param("unit_amount")

        product_data = data.get("product_data")
        product_id = data.get("product")
        if product_id is None and not isinstance(product_data, dict):
            return _missing_param("product")
        if product_id is not None and f"product:{product_id}" not in store:
            return _no_such("product", product_id, "product")
        if isinstance(product_data, dict) and not product_data.get("name"):
            return _missing_param("product_data[name]")

        recurring = data.get("recurring")
        if recurring is not None and not isinstance(recurring, dict):
            return _stripe_error(400, "Invalid object", param="recurring")
        interval_count = 1
        usage_type = "licensed"
        if recurring is not None:
            if recurring.get("interval") not in ("day", "week", "month", "year"):
                return _stripe_error(
                    400,
                    "Invalid recurring[interval]: must be one of day, month, week, or year",
                    param="recurring[interval]",
                )
            interval_count = _to_int(recurring.get("interval_count", 1)) or 1
            usage_type = recurring.get("usage_type") or "licensed"
            if usage_type not in ("licensed", "metered"):
                return _stripe_error(
                    400, "Invalid recurring[usage_type]", param="recurring[usage_type]"
                )

        lookup_key = data.get("lookup_key")
        if lookup_key:
            owner = lookup_key_owner(lookup_key)
            if owner is not None:
                if _to_bool(data.get("transfer_lookup_key")):
                    store[f"price:{owner['id']}"]["lookup_key"] = None
                else:
                    return _stripe_error(
                        400,
                        f"A price (`{owner['id']}`) already uses that lookup key.",
                        param="lookup_key",
                    )

        if isinstance(product_data, dict) and product_id is None:
            product = ls.Product(
                name=product_data["name"], metadata=_metadata(product_data.get("metadata"))
            )
            product_id = product.id

        price_id = _random_id("price_", 24)
        metadata = _metadata(data.get("metadata"))
        nickname = data.get("nickname")
        if recurring is not None:
            # The localstripe twin: subscriptions reference it by `items[n][plan]=<price id>`.
            # Its constructor validates before storing anything and raises UserError (which
            # localstripe's error middleware renders) on bad input.
            ls.Plan(
                id=price_id,
                amount=unit_amount,
                currency=currency,
                interval=recurring["interval"],
                interval_count=interval_count,
                usage_type=usage_type,
                product=product_id,
                nickname=nickname,
                metadata=dict(metadata),
            )

        price: _Json = {
            "id": price_id,
            "object": "price",
            "active": _to_bool(data.get("active", True)) is not False,
            "billing_scheme": "per_unit",
            "created": int(time.time()),
            "currency": str(currency).lower(),
            "custom_unit_amount": None,
            "livemode": False,
            "lookup_key": lookup_key or None,
            "metadata": metadata,
            "nickname": nickname,
            "product": product_id,
            "recurring": None
            if recurring is None
            else {
                "interval": recurring["interval"],
                "interval_count": interval_count,
                "meter": recurring.get("meter"),
                "trial_period_days": None,
                "usage_type": usage_type,
            },
            "tax_behavior": data.get("tax_behavior") or "unspecified",
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "one_time" if recurring is None else "recurring",
            "unit_amount": unit_amount,
            "unit_amount_decimal": str(unit_amount),
        }
        store[f"price:{price_id}"] = price
        return json_ok(price)

    async def retrieve_price(request: web.Request) -> web.Response:
        price_id = request.match_info["id"]
        price = store.get(f"price:{price_id}")
        if not isinstance(price, dict):
            return _no_such("price", price_id, "price", status=404)
        return json_ok(price)

    async def update_price(request: web.Request) -> web.Response:
        price_id = request.match_info["id"]
        price = store.get(f"price:{price_id}")
        if not isinstance(price, dict):
            return _no_such("price", price_id, "price", status=404)
        data = await form(request)
        if "metadata" in data:
            # Stripe merges metadata keys; an empty value deletes a key.
            for key, value in _metadata(data["metadata"]).items():
                if value == "":
                    price["metadata"].pop(key, None)
                else:
                    price["metadata"][key] = value
            if data["metadata"] == "":
                price["metadata"] = {}
        if "active" in data:
            price["active"] = _to_bool(data["active"]) is not False
        if "nickname" in data:
            price["nickname"] = data["nickname"] or None
        if "lookup_key" in data:
            price["lookup_key"] = data["lookup_key"] or None
        return json_ok(price)

    async def list_prices(request: web.Request) -> web.Response:
        params = query(request)
        prices = [dict(v) for k, v in store.items() if k.startswith("price:")]
        if "active" in params:
            active = _to_bool(params["active"])
            prices = [p for p in prices if p["active"] == active]
        if "product" in params:
            prices = [p for p in prices if p["product"] == params["product"]]
        if "type" in params:
            prices = [p for p in prices if p["type"] == params["type"]]
        if "lookup_keys" in params:
            keys = params["lookup_keys"]
            keys = keys if isinstance(keys, list) else [keys]
            prices = [p for p in prices if p["lookup_key"] in keys]
        prices.reverse()  # newest first, as Stripe lists
        if "starting_after" in params:
            ids = [p["id"] for p in prices]
            if params["starting_after"] in ids:
                prices = prices[ids.index(params["starting_after"]) + 1 :]
        limit = _to_int(params.get("limit")) or 10
        return json_ok(
            {
                "object": "list",
                "url": "/v1/prices",
                "has_more": len(prices) > limit,
                "data": prices[:limit],
            }
        )

    # -- idempotency (Stripe's documented behaviour; localstripe ignores the header) --------
    #
    # The first answer to a key is saved and replayed to every later request with that key;
    # the same key with other parameters is an `idempotency_error`; a request arriving while
    # the first one runs gets 409 `idempotency_key_in_use` (nothing saved, retry later).
    # Answers are kept in localstripe's store, so DELETE /_config/data forgets them too.
    in_flight: set[str] = set()

    @web.middleware
    async def idempotency_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key")
        if not key or request.method not in ("POST", "DELETE"):
            return await handler(request)
        body = await request.read()
        scoped = f"idempotency:{request.headers.get('Authorization', '')}:{key}"
        fingerprint = hashlib.sha256(
            request.method.encode() + request.path.encode() + b"?" + body
        ).hexdigest()
        saved = store.get(scoped)
        if isinstance(saved, dict):
            if saved["fingerprint"] != fingerprint:
                return _stripe_error(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters "
                    f"they were first used with. Try using a key other than '{key}' if you "
                    "meant to execute a different request.",
                    error_type="idempotency_error",
                )
            return web.Response(
                status=saved["status"],
                body=saved["body"],
                content_type="application/json",
                headers={
                    "Idempotent-Replayed": "true",
                    "Idempotency-Key": key,
                    "Request-Id": _random_id("req_", 14),
                },
            )
        if scoped in in_flight:
            return _stripe_error(
                409,
                "There is currently another in-progress request using this Stripe "
                "Idempotency-Key. Please try again later.",
                code="idempotency_key_in_use",
            )
        in_flight.add(scoped)
        try:
            delay = request.get("processing_delay", 0.0)
            if delay > 0:
                await asyncio.sleep(delay)
            response = await handler(request)
        finally:
            in_flight.discard(scoped)
        # Validation failures (400) and auth failures are not saved, as with Stripe.
        if isinstance(response, web.Response) and response.status not in (400, 401, 409, 429):
            payload = response.body
            if isinstance(payload, bytes):
                store[scoped] = {
                    "fingerprint": fingerprint,
                    "status": response.status,
                    "body": payload,
                }
        return response

    # -- POST /v1/subscriptions/{id}: price changes with proration, pending updates --------
    #
    # localstripe changes a subscription's plan but refuses `proration_behavior` (500),
    # `payment_behavior` and `items[][price]`, and never prorates. This answers as Stripe's
    # API reference documents: the item keeps its id and gets the new price; prorations
    # credit the unused time of the old price and charge the rest of the period at the new
    # one; `always_invoice` invoices and charges them now; with `pending_if_incomplete` a
    # failed payment leaves the subscription unchanged and describes the change in
    # `pending_update`. Other updates go on to localstripe.
    pending_update_params = {
        "items",
        "payment_behavior",
        "proration_behavior",
        "proration_date",
        "expand",
        "billing_cycle_anchor",
        "trial_end",
        "trial_from_plan",
        "add_invoice_items",
    }

    def update_subscription_price(sub: Any, data: _Json) -> web.Response:
        proration = data.get("proration_behavior") or "create_prorations"
        if proration not in ("create_prorations", "always_invoice", "none"):
            return _stripe_error(
                400, f"Invalid proration_behavior: {proration}", param="proration_behavior"
            )
        behavior = data.get("payment_behavior") or "allow_incomplete"
        if behavior not in (
            "allow_incomplete",
            "default_incomplete",
            "error_if_incomplete",
            "pending_if_incomplete",
        ):
            return _stripe_error(
                400, f"Invalid payment_behavior: {behavior}", param="payment_behavior"
            )
        if behavior == "pending_if_incomplete":
            extra = sorted(set(data) - pending_update_params)
            if extra:
                return _stripe_error(
                    400,
                    "When `payment_behavior` is `pending_if_incomplete`, you can only pass "
                    f"the parameters supported by pending updates; got {', '.join(extra)}.",
                    param=extra[0],
                )
        items = data.get("items") or []
        if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
            return _stripe_error(400, "The peer serves one subscription item.", param="items")
        current = sub.items._list[0]
        wanted = items[0]
        if wanted.get("id") != current.id:
            return _no_such("subscription item", wanted.get("id"), "items[0][id]")
        price_id = wanted.get("price") or wanted.get("plan") or current.plan.id
        new_plan = store.get(f"plan:{price_id}")
        if new_plan is None:
            return _no_such("price", price_id, "items[0][price]")
        quantity = _to_int(wanted.get("quantity")) or current.quantity
        if new_plan.id == current.plan.id and quantity == current.quantity:
            return json_ok(sub._export())
        period = current._current_period()
        now = _to_int(data.get("proration_date")) or int(time.time())
        span = max(period["end"] - period["start"], 1)
        left = min(max(period["end"] - now, 0), span) / span
        invoice = None
        if proration != "none":
            for amount, plan_id, text in (
                (-round(current.plan.amount * current.quantity * left), current.plan.id, "Unused"),
                (round(new_plan.amount * quantity * left), new_plan.id, "Remaining"),
            ):
                ls.InvoiceItem(
                    amount=amount,
                    currency=new_plan.currency,
                    customer=sub.customer,
                    subscription=sub.id,
                    plan=plan_id,
                    proration=True,
                    description=f"{text} time on {plan_id} after {now}",
                    period_start=max(now, period["start"]),
                    period_end=period["end"],
                )
        if proration == "always_invoice":
            # Not linked to the subscription while it is charged, so that localstripe's
            # renewal-failure rules (past_due, SEPA cancels) do not apply to a proration.
            invoice = ls.Invoice(customer=sub.customer)
            invoice._finalize()
            with contextlib.suppress(ls_errors.UserError):
                if invoice.status != "paid":
                    ls.Invoice._api_pay_invoice(invoice.id)
            invoice.subscription = sub.id
            invoice.billing_reason = "subscription_update"
            sub.latest_invoice = invoice.id
            if invoice.status != "paid":
                if behavior == "pending_if_incomplete":
                    sub.pending_update = {
                        "billing_cycle_anchor": None,
                        "expires_at": int(time.time()) + 23 * 3600,
                        "subscription_items": [
                            {"id": current.id, "price": new_plan.id, "quantity": quantity}
                        ],
                        "trial_end": None,
                        "trial_from_plan": None,
                    }
                    return json_ok(sub._export())
                if behavior == "error_if_incomplete":
                    return _stripe_error(
                        402,
                        "Your card was declined.",
                        error_type="card_error",
                        code="card_declined",
                    )
                sub.status = "past_due"
        current.plan = new_plan
        current.quantity = quantity
        sub.quantity = quantity
        sub.pending_update = None
        ls_webhooks.schedule_webhook(ls.Event("customer.subscription.updated", sub))
        return json_ok(sub._export())

    subscription_path = re.compile(r"^/v1/subscriptions/(sub_\w+)$")

    @web.middleware
    async def subscription_update_middleware(
        request: web.Request, handler: _Handler
    ) -> web.StreamResponse:
        match = subscription_path.match(request.path)
        if request.method != "POST" or match is None:
            return await handler(request)
        sub = store.get(f"subscription:{match.group(1)}")
        if sub is None:
            return await handler(request)
        data = await form(request)
        schedule = getattr(sub, "schedule", None)
        if schedule and ("cancel_at_period_end" in data or "cancel_at" in data):
            return _stripe_error(
                400,
                f"The subscription is managed by the subscription schedule `{schedule}`, and "
                "updating any cancelation behavior directly is not allowed. Please update "
                "the schedule instead.",
            )
        items = data.get("items")
        prices = isinstance(items, list) and any(
            isinstance(i, dict) and "price" in i for i in items
        )
        if prices or "proration_behavior" in data or "payment_behavior" in data:
            return update_subscription_price(sub, data)
        return await handler(request)

    # -- /v1/subscription_schedules (from an existing subscription) ------------------------

    def schedule_or_404(schedule_id: str) -> _Json | None:
        schedule = store.get(f"subscription_schedule:{schedule_id}")
        return schedule if isinstance(schedule, dict) else None

    def phase_end(start: int, plan: Any, duration: object) -> int:
        from dateutil.relativedelta import relativedelta

        interval, count = plan.interval, plan.interval_count or 1
        if isinstance(duration, dict):
            interval = duration.get("interval") or interval
            count = _to_int(duration.get("interval_count")) or 1
        step = {
            "day": relativedelta(days=count),
            "week": relativedelta(weeks=count),
            "month": relativedelta(months=count),
            "year": relativedelta(years=count),
        }[str(interval)]
        return int((datetime.fromtimestamp(start, tz=UTC) + step).timestamp())

    async def create_schedule(request: web.Request) -> web.Response:
        data = await form(request)
        sub_id = data.get("from_subscription")
        if not sub_id:
            return _missing_param("from_subscription")
        sub = store.get(f"subscription:{sub_id}")
        if sub is None:
            return _no_such("subscription", sub_id, "from_subscription")
        if getattr(sub, "schedule", None):
            return _stripe_error(
                400,
                "You cannot migrate a subscription that is already attached to a schedule: "
                f"`{sub.schedule}`.",
                param="from_subscription",
            )
        if sub.status in ("canceled", "incomplete_expired"):
            return _stripe_error(400, f"The subscription is {sub.status}.")
        item = sub.items._list[0]
        period = item._current_period()
        schedule_id = _random_id("sub_sched_", 24)
        schedule: _Json = {
            "id": schedule_id,
            "object": "subscription_schedule",
            "created": int(time.time()),
            "customer": sub.customer,
            "subscription": sub.id,
            "status": "active",
            "end_behavior": "release",
            "phases": [
                {
                    "start_date": period["start"],
                    "end_date": period["end"],
                    "items": [{"price": item.plan.id, "quantity": item.quantity}],
                    "proration_behavior": "create_prorations",
                    "metadata": {},
                }
            ],
            "current_phase": {"start_date": period["start"], "end_date": period["end"]},
            "canceled_at": None,
            "completed_at": None,
            "released_at": None,
            "released_subscription": None,
            "metadata": _metadata(data.get("metadata")),
            "livemode": False,
        }
        store[f"subscription_schedule:{schedule_id}"] = schedule
        sub.schedule = schedule_id
        return json_ok(schedule)

    async def retrieve_schedule(request: web.Request) -> web.Response:
        schedule = schedule_or_404(request.match_info["id"])
        if schedule is None:
            return _no_such("subscription_schedule", request.match_info["id"], "id", 404)
        return json_ok(schedule)

    def not_updatable(schedule: _Json) -> web.Response | None:
        if schedule["status"] in ("active", "not_started"):
            return None
        return _stripe_error(
            400,
            "You cannot update a subscription schedule that is currently in the "
            f"`{schedule['status']}` status. It must be in one of the following statuses: "
            "`not_started`, `active`.",
        )

    async def update_schedule(request: web.Request) -> web.Response:
        schedule = schedule_or_404(request.match_info["id"])
        if schedule is None:
            return _no_such("subscription_schedule", request.match_info["id"], "id", 404)
        refused = not_updatable(schedule)
        if refused is not None:
            return refused
        data = await form(request)
        end_behavior = data.get("end_behavior") or schedule["end_behavior"]
        if end_behavior not in ("release", "cancel"):
            return _stripe_error(400, "Invalid end_behavior", param="end_behavior")
        phases_in = data.get("phases")
        if phases_in is not None:
            if not isinstance(phases_in, list) or not phases_in:
                return _stripe_error(400, "Invalid array", param="phases")
            phases: list[_Json] = []
            for index, phase in enumerate(phases_in):
                items = phase.get("items") if isinstance(phase, dict) else None
                if not isinstance(items, list) or not items:
                    return _missing_param(f"phases[{index}][items]")
                plans = []
                for item in items:
                    price_id = item.get("price") or item.get("plan")
                    if f"plan:{price_id}" not in store:
                        return _no_such("price", price_id, f"phases[{index}][items][0][price]")
                    plans.append(store[f"plan:{price_id}"])
                start = _to_int(phase.get("start_date"))
                if index == 0:
                    if start != schedule["current_phase"]["start_date"]:
                        return _stripe_error(
                            400,
                            "You can not modify the start date of the current phase.",
                            param="phases[0][start_date]",
                        )
                else:
                    start = phases[-1]["end_date"]
                end = _to_int(phase.get("end_date"))
                if end is None:
                    end = phase_end(int(start or 0), plans[0], phase.get("duration"))
                if end <= int(start or 0):
                    return _stripe_error(
                        400, "Phase end_date must be after its start.", param="phases"
                    )
                phases.append(
                    {
                        "start_date": start,
                        "end_date": end,
                        "items": [
                            {
                                "price": p.id,
                                "quantity": _to_int(i.get("quantity")) or 1,
                            }
                            for p, i in zip(plans, items, strict=True)
                        ],
                        "proration_behavior": phase.get("proration_behavior")
                        or "create_prorations",
                        "metadata": _metadata(phase.get("metadata")),
                    }
                )
            schedule["phases"] = phases
            schedule["current_phase"] = {
                "start_date": phases[0]["start_date"],
                "end_date": phases[0]["end_date"],
            }
        schedule["end_behavior"] = end_behavior
        return json_ok(schedule)

    async def release_schedule(request: web.Request) -> web.Response:
        schedule = schedule_or_404(request.match_info["id"])
        if schedule is None:
            return _no_such("subscription_schedule", request.match_info["id"], "id", 404)
        refused = not_updatable(schedule)
        if refused is not None:
            return refused
        sub = store.get(f"subscription:{schedule['subscription']}")
        if sub is not None:
            sub.schedule = None
        schedule.update(
            status="released",
            released_at=int(time.time()),
            released_subscription=schedule["subscription"],
            subscription=None,
            current_phase=None,
        )
        return json_ok(schedule)

    # -- /_config controls -----------------------------------------------------------------

    async def set_failure(request: web.Request) -> web.Response:
        data = await form(request)
        path_prefix = data.get("path_prefix")
        if not isinstance(path_prefix, str) or not path_prefix.startswith("/"):
            return _stripe_error(400, "path_prefix must start with /", param="path_prefix")
        status = _to_int(data.get("status", 500))
        try:
            delay = float(data.get("delay") or 0.0)
        except ValueError:
            delay = -1.0
        count = _to_int(data["count"]) if data.get("count") not in (None, "") else None
        if status is None or not 100 <= status <= 599 or delay < 0:
            return _stripe_error(400, "bad status or delay")
        if count is not None and count <= 0:
            return _stripe_error(400, "count must be positive", param="count")
        method = str(data["method"]).upper() if data.get("method") else None
        rule = _FailureRule(
            path_prefix=path_prefix,
            status=status,
            delay=delay,
            remaining=count,
            method=method,
            error_type=str(data.get("type") or "api_error"),
        )
        control.failures = [
            r
            for r in control.failures
            if (r.path_prefix, r.method) != (rule.path_prefix, rule.method)
        ]
        control.failures.append(rule)
        return json_ok({"rules": [vars(r) for r in control.failures]})

    async def clear_failures(request: web.Request) -> web.Response:
        control.failures.clear()
        return json_ok({"rules": []})

    async def get_calls(request: web.Request) -> web.Response:
        path_prefix = request.query.get("path_prefix", "/")
        method = request.query.get("method")
        count = control.count_calls(path_prefix, method.upper() if method else None)
        return json_ok({"count": count})

    async def reset_calls(request: web.Request) -> web.Response:
        control.calls.clear()
        return json_ok({"count": 0})

    async def clear_webhooks(request: web.Request) -> web.Response:
        ls_webhooks._webhooks.clear()
        return web.Response()

    async def delete_webhook(request: web.Request) -> web.Response:
        ls_webhooks._webhooks.pop(request.match_info["id"], None)
        return web.Response()

    # None of these paths is served by localstripe (it has no /v1/{anything} catch-all; its
    # patterns are /v1/<object>s and /v1/<object>s/{id}), so registration order does not
    # decide who answers; the tests call each route to make sure.
    router = app.router
    router.add_post("/v1/checkout/sessions", create_checkout_session)
    router.add_get("/v1/checkout/sessions", list_checkout_sessions)
    router.add_get("/v1/checkout/sessions/{id}", retrieve_checkout_session)
    router.add_post("/v1/checkout/sessions/{id}/expire", expire_checkout_session)
    router.add_post("/v1/billing_portal/sessions", create_portal_session)
    router.add_post("/v1/prices", create_price)
    router.add_get("/v1/prices", list_prices)
    router.add_get("/v1/prices/{id}", retrieve_price)
    router.add_post("/v1/prices/{id}", update_price)
    router.add_post("/v1/subscription_schedules", create_schedule)
    router.add_get("/v1/subscription_schedules/{id}", retrieve_schedule)
    router.add_post("/v1/subscription_schedules/{id}", update_schedule)
    router.add_post("/v1/subscription_schedules/{id}/release", release_schedule)
    # Idempotency right inside the controls (so injected failures are never saved), and
    # the subscription update innermost (after localstripe's auth and error handling).
    app.middlewares.insert(1, idempotency_middleware)
    app.middlewares.append(subscription_update_middleware)
    router.add_post("/_config/fail", set_failure)
    router.add_delete("/_config/fail", clear_failures)
    router.add_get("/_config/calls", get_calls)
    router.add_delete("/_config/calls", reset_calls)
    router.add_delete("/_config/webhooks", clear_webhooks)
    router.add_delete("/_config/webhooks/{id}", delete_webhook)
    router.add_post("/_config/checkout/sessions/{id}/complete", complete_checkout_session)
    return app


async def _serve(host: str, port: int, parent_pid: int | None, verbose: bool) -> None:
    from aiohttp import web

    app = build_app()
    if verbose:
        import logging

        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        runner = web.AppRunner(app)  # default access log, to stderr via logging
    else:
        runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = int(runner.addresses[0][1])

    print(f"{READY_PREFIX} {bound_port}", flush=True)
    # From now on stdout is nobody's to read: a parent that stopped reading the pipe would
    # block us once it fills, so send any later stdout writes to stderr.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def watch_parent() -> None:
        # Exit if the test process that started us died without stopping us.
        while parent_pid is not None and not stop.is_set():
            if os.getppid() != parent_pid:
                stop.set()
            await asyncio.sleep(1.0)

    watcher = asyncio.ensure_future(watch_parent())
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--parent-pid", type=int, default=None, help="exit when this process is gone"
    )
    parser.add_argument("--verbose", action="store_true", help="access log on stderr")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.host, args.port, args.parent_pid, args.verbose))


def _drop_script_dir_from_path() -> None:
    """When run as a file, Python puts tests/ first on sys.path, where a test module could
    shadow a real package (aiohttp, localstripe...). Take it out before the lazy imports."""
    here = str(_THIS_FILE.parent)
    sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != here]


if __name__ == "__main__":
    if not __package__:
        _drop_script_dir_from_path()
    main()
