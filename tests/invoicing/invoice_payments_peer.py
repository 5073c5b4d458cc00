"""A small Stripe API peer for what localstripe lacks here: `GET /v1/invoice_payments`
(today's link between an invoice and the payment intent that paid it), answering as
Stripe's API reference documents. Any other path answers Stripe's 404 error."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class InvoicePaymentsPeer:
    url: str = ""
    payments: list[dict[str, Any]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def paid(self, invoice_id: str, payment_intent: str, amount: int) -> None:
        """Stripe now knows that `payment_intent` paid `invoice_id`."""
        self.payments.append(
            {
                "id": f"inpay_{secrets.token_hex(8)}",
                "object": "invoice_payment",
                "amount_paid": amount,
                "amount_requested": amount,
                "currency": "eur",
                "invoice": invoice_id,
                "is_default": True,
                "livemode": False,
                "payment": {"type": "payment_intent", "payment_intent": payment_intent},
                "status": "paid",
                "status_transitions": {"canceled_at": None, "paid_at": 1764000000},
            }
        )

    def matching(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        invoice = query.get("invoice", [None])[0]
        intent = query.get("payment[payment_intent]", [None])[0]
        return [
            p
            for p in self.payments
            if (invoice is None or p["invoice"] == invoice)
            and (intent is None or p["payment"]["payment_intent"] == intent)
        ]


@contextmanager
def invoice_payments_peer() -> Iterator[InvoicePaymentsPeer]:
    peer = InvoicePaymentsPeer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            peer.requests.append(self.path)
            if parts.path == "/v1/invoice_payments":
                data = peer.matching(parse_qs(parts.query))
                body = {"object": "list", "data": data, "has_more": False, "url": parts.path}
                self._answer(200, body)
                return
            error = {"type": "invalid_request_error", "message": "Unrecognized request URL"}
            self._answer(404, {"error": error})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    peer.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        server.shutdown()
        server.server_close()
