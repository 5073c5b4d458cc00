"""`meterbill dev`: meterbill with a local Stripe, a local mailbox and a signed demo token,
so the whole flow (checkout, payment, invoice, email, quota 429) runs on a laptop with no
Stripe account.

The local Stripe is the peer the tests use (`tests/stripe_peer.py`: localstripe plus
Checkout, portal and prices), so `meterbill dev` runs from a source checkout installed with
`pip install -e '.[test]'` (or with METERBILL_STRIPE_PEER naming that file). Its data lives
in `METERBILL_HOME/dev/`, apart from the real database.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse, JSONResponse

from meterbill.config import Settings, meterbill_home

DEV_JWT_SECRET_BYTES = 32
# Secrets of the local stack only (the local Stripe accepts any `sk_` key).
DEV_WEBHOOK_SECRET = "whsec_meterbill_dev"  # noqa: S105
DEV_STRIPE_KEY = "sk_test_meterbill_dev"
DEV_USER = "dev-user"
PRICES = {"premium": 900, "pro": 2900}
log = logging.getLogger("meterbill.dev")


class DevSetupError(RuntimeError):
    """`meterbill dev` cannot start; the message says what is missing."""


def _peer_module() -> ModuleType:
    """tests/stripe_peer.py of the source checkout (or METERBILL_STRIPE_PEER), loaded by path."""
    explicit = os.environ.get("METERBILL_STRIPE_PEER", "").strip()
    path = Path(explicit) if explicit else Path(__file__).resolve().parents[2] / "tests"
    if path.is_dir():
        path = path / "stripe_peer.py"
    if not path.is_file():
        raise DevSetupError(
            f"the local Stripe peer is not at {path}: run `meterbill dev` from a source "
            "checkout installed with `pip install -e '.[test]'`, or set METERBILL_STRIPE_PEER"
        )
    spec = importlib.util.spec_from_file_location("meterbill_dev_stripe_peer", path)
    if spec is None or spec.loader is None:
        raise DevSetupError(f"cannot load the local Stripe peer from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


class Mailbox:
    """A local SMTP server (aiosmtpd) that prints every email it receives."""

    def __init__(self, port: int, echo: Callable[[str], None]) -> None:
        try:
            from aiosmtpd.controller import Controller
        except ImportError as exc:
            raise DevSetupError("aiosmtpd is missing: pip install -e '.[test]'") from exc
        mailbox = self

        class Printer:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                mailbox.show(envelope.content)
                return "250 Message accepted for delivery"

        self.echo = echo
        self.received = 0
        self.controller = Controller(Printer(), hostname="127.0.0.1", port=port)

    def show(self, content: bytes) -> None:
        message = message_from_bytes(content, policy=policy.default)
        body = message.get_body(preferencelist=("plain", "html"))
        text = body.get_content() if body is not None else ""
        attachments = [part.get_filename() for part in message.iter_attachments()]
        self.received += 1
        self.echo(
            f"\n--- email #{self.received} to {message['To']}: {message['Subject']}\n"
            f"{str(text).strip()}\n"
            + (f"(attached: {', '.join(str(a) for a in attachments)})\n" if attachments else "")
            + "---"
        )

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


def dev_router(settings: Settings) -> APIRouter:
    """`/dev/checkout/{id}`: the page a checkout URL leads to in dev, whose Pay button does
    what paying on Stripe's page does: a card, a subscription, and Stripe's webhooks."""
    router = APIRouter(prefix="/dev", include_in_schema=False)

    @router.get("/checkout/{session_id}")
    def checkout_page(session_id: str) -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html><title>meterbill dev checkout</title>"
            f"<h1>Local checkout {session_id}</h1>"
            f"<form method=post action='/dev/checkout/{session_id}/pay'>"
            "<button>Pay with the test card 4242 4242 4242 4242</button></form>"
        )

    @router.post("/checkout/{session_id}/pay")
    def pay(session_id: str) -> JSONResponse:
        # The local Stripe pays the session as Stripe's page does (a card, the subscription,
        # its webhooks), and like it refuses a session expired or paid already.
        answer = httpx.post(
            f"{settings.stripe_api_base}/_config/checkout/sessions/{session_id}/complete",
            timeout=10,
        )
        if answer.status_code != 200:
            return JSONResponse({"status": "refused", "reason": answer.text}, status_code=409)
        session = answer.json()
        plan = str((session.get("metadata") or {}).get("plan", ""))
        return JSONResponse(
            {"status": "paid", "subscription": str(session["subscription"]), "plan": plan}
        )

    return router


@dataclass
class DevStack:
    """Everything `meterbill dev` runs; `stop` ends it all."""

    settings: Settings
    token: str
    api_key: str
    stops: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        for stop in reversed(self.stops):
            try:
                stop()
            except Exception:  # stopping the rest matters more
                log.warning("a dev component did not stop cleanly", exc_info=True)


def _price(peer_url: str, plan: str, amount: int) -> str:
    auth = (DEV_STRIPE_KEY, "")
    product = httpx.post(f"{peer_url}/v1/products", data={"name": plan}, auth=auth).json()
    price = httpx.post(
        f"{peer_url}/v1/prices",
        data={
            "unit_amount": amount,
            "currency": "eur",
            "recurring[interval]": "month",
            "product": product["id"],
            "lookup_key": f"meterbill_dev_{plan}",
        },
        auth=auth,
    ).json()
    return str(price["id"])


def start_dev(
    host: str, port: int, echo: Callable[[str], None], limit_api_calls: int = 20
) -> DevStack:
    """Start the local Stripe, the mailbox, meterbill and a worker; return how to use them."""
    import uvicorn

    from meterbill.app import create_app
    from meterbill.auth.service import create_api_key, issue_user_token
    from meterbill.db import Database
    from meterbill.jobs.worker import Worker
    from meterbill.migrate import upgrade

    peer_module = _peer_module()
    home = meterbill_home() / "dev"
    home.mkdir(parents=True, exist_ok=True)
    stack_stops: list[Callable[[], None]] = []
    try:
        peer = peer_module.start_stripe_peer()
        stack_stops.append(peer.stop)
        prices = {plan: _price(peer.url, plan, amount) for plan, amount in PRICES.items()}
        smtp_port = _free_port()
        mailbox = Mailbox(smtp_port, echo)
        mailbox.start()
        stack_stops.append(mailbox.stop)
        base = f"http://{host}:{port}"
        settings = Settings(
            _env_file=None,
            database_url=f"sqlite:///{home / 'meterbill.db'}",
            invoice_dir=home / "invoices",
            jwt_secret=secrets.token_urlsafe(DEV_JWT_SECRET_BYTES),
            stripe_secret_key=DEV_STRIPE_KEY,
            stripe_publishable_key="pk_test_meterbill_dev",
            stripe_webhook_secret=DEV_WEBHOOK_SECRET,
            stripe_api_base=peer.url,
            stripe_price_premium=prices["premium"],
            stripe_price_pro=prices["pro"],
            stripe_max_retries=0,
            smtp_url=f"smtp://127.0.0.1:{smtp_port}",
            app_base_url=base,
            limit_free_api_calls=limit_api_calls,
            worker_poll_seconds=0.2,
            log_level="WARNING",
            # A sample seller: French law numbers no invoice without one.
            seller_name="Demo SaaS SAS",
            seller_address="1 rue de la Paix;75002 Paris",
            seller_email="billing@demo-saas.example",
            seller_siren="812345678",
            seller_vat_number="FR40812345678",
            seller_legal_form="SAS au capital de 10 000 €",
            seller_rcs="RCS Paris 812 345 678",
        )
        db = Database(settings.database_url)
        upgrade(db.engine)
        with db.transaction() as session:
            api_key = create_api_key(session, "meterbill dev")
        stack_stops.append(db.dispose)

        app: FastAPI = create_app(settings, migrate=False)
        app.include_router(dev_router(settings))
        server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()

        def stop_server() -> None:
            server.should_exit = True
            thread.join(10)

        stack_stops.append(stop_server)
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise DevSetupError(f"meterbill did not start on {host}:{port}")
            time.sleep(0.05)
        peer.register_webhook(f"{base}/api/v1/billing/webhook", DEV_WEBHOOK_SECRET)

        stop_worker = threading.Event()
        worker = Worker(settings, db, worker_id="meterbill-dev")
        worker_thread = threading.Thread(
            target=worker.run_forever, args=(stop_worker,), daemon=True
        )
        worker_thread.start()

        def stop_background() -> None:
            stop_worker.set()
            worker_thread.join(10)

        stack_stops.append(stop_background)
        token = issue_user_token(settings, DEV_USER, email="dev-user@example.com")
        return DevStack(settings, token, api_key, stack_stops)
    except BaseException:
        DevStack(Settings(_env_file=None), "", "", stack_stops).stop()
        raise


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def walkthrough(stack: DevStack, base: str) -> str:
    """What to type, in order, to walk the flow."""
    auth = f'-H "Authorization: Bearer {stack.token}"'
    key = f'-H "X-API-Key: {stack.api_key}"'
    return "\n".join(
        [
            f"meterbill dev ready on {base} (docs: {base}/docs)",
            f"local Stripe: {stack.settings.stripe_api_base} · "
            f"mailbox: {stack.settings.smtp_url} (emails are printed here)",
            f"user: {DEV_USER}",
            f"token: {stack.token}",
            f"api key: {stack.api_key}",
            "",
            "1. checkout:  curl -X POST "
            f"{base}/api/v1/billing/checkout {auth} "
            "-H 'Content-Type: application/json' -d '{\"plan\": \"premium\"}'",
            f"2. pay:       curl -X POST {base}/dev/checkout/SESSION_ID/pay",
            f"3. status:    curl {base}/api/v1/billing/status {auth}",
            f"4. invoices:  curl {base}/api/v1/billing/invoices {auth}  (the email prints here)",
            f"5. quota:     curl -X POST {base}/api/v1/usage/consume {key} "
            "-H 'Content-Type: application/json' "
            f'-d \'{{"user_id": "other-user", "value": 25}}\'  (free plan: 429)',
            "Ctrl-C stops everything.",
        ]
    )
