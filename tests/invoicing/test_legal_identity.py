"""Legal invoices only: no number without the seller's identity French law requires, and
reverse charge ("Autoliquidation") for EU business buyers Stripe charged no VAT."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from pypdf import PdfReader

from meterbill.db import utcnow
from meterbill.jobs.worker import SCHEDULES, Worker
from tests import stripe_events as se
from tests.conftest import Clock, Service, base_settings, free_port
from tests.invoicing.helpers import customer_of, documents, invoice_json, ledger, lines, posted

NO_IDENTITY = {"seller_siren": "", "seller_siret": "", "seller_vat_number": ""}


def _readiness(service: Service) -> dict[str, Any]:
    response = service.client.get("/readyz")
    assert response.status_code == 200, response.text  # a load balancer keeps the service
    return response.json()  # type: ignore[no-any-return]


def test_paid_invoices_wait_unnumbered_then_are_issued_when_the_seller_is_complete(
    make_service: Callable[..., Service], tmp_path: Path
) -> None:
    incomplete = make_service(invoice_dir=tmp_path, **NO_IDENTITY)
    customer = customer_of(incomplete)
    paid = se.invoice("in_wait", customer, "sub_wait", amount=1080, payment_intent="pi_wait")
    assert posted(incomplete, se.event("invoice.paid", paid)) == "applied"
    assert posted(incomplete, se.event("invoice.payment_succeeded", paid)) == "applied"
    refund = se.charge_refunded(customer, "pi_wait", 1080, [("re_wait", 400)])
    assert posted(incomplete, se.event("charge.refunded", refund)) == "applied"

    assert documents(incomplete) == []  # nothing numbered without SIREN and VAT number
    payment, refunded = ledger(incomplete)
    assert (payment.type, payment.amount, payment.invoice_id) == ("payment", 1080, None)
    assert (refunded.type, refunded.amount) == ("refund", -400)
    ready = _readiness(incomplete)
    assert ready["status"] == "ready"
    assert ready["details"]["invoicing"] == {
        "seller_identity": "incomplete",
        "missing_settings": ["METERBILL_SELLER_SIREN", "METERBILL_SELLER_VAT_NUMBER"],
        "pending_documents": 1,
        "last_audit": None,
    }
    assert "METERBILL_SELLER_SIREN" in ready["warnings"][0]
    incomplete.stop()

    complete = make_service(invoice_dir=tmp_path)  # restarted with the identity set
    invoice, credit = documents(complete)
    month = f"{utcnow():%Y%m}"
    assert invoice.invoice_number == f"FACT-{month}-0001" and invoice.amount == 1080
    assert credit.invoice_number == f"AVOIR-{month}-0001" and credit.amount == -400
    assert credit.credited_invoice_id == invoice.id
    assert [t.invoice_id for t in ledger(complete)] == [invoice.id, invoice.id]
    body = invoice_json(complete, invoice.invoice_number)
    assert body["seller"]["siren"] == "812345678"
    assert body["balance"]["paid"] == 1080 and body["balance"]["refunded"] == 400
    assert _readiness(complete)["details"]["invoicing"]["pending_documents"] == 0
    assert "warnings" not in _readiness(complete)
    # Delivered again now: still one invoice.
    assert posted(complete, se.event("invoice.paid", paid)) == "applied"
    assert len(documents(complete, "invoice")) == 1


def test_the_worker_issues_waiting_invoices_once_the_identity_is_complete(
    make_service: Callable[..., Service], database_url: str, tmp_path: Path
) -> None:
    incomplete = make_service(invoice_dir=tmp_path, seller_name="", seller_address="")
    customer = customer_of(incomplete)
    for number in (1, 2):
        stripe_invoice = se.invoice(f"in_w{number}", customer, "sub_w", amount=900 * number)
        posted(incomplete, se.event("invoice.paid", stripe_invoice))
    assert documents(incomplete) == []
    missing = _readiness(incomplete)["details"]["invoicing"]["missing_settings"]
    assert missing == ["METERBILL_SELLER_NAME", "METERBILL_SELLER_ADDRESS"]

    settings = base_settings(database_url, invoice_dir=tmp_path)
    worker = Worker(settings, incomplete.db, clock=Clock(), schedules=SCHEDULES)
    worker.tick_schedules()
    worker.run_pending()
    issued = documents(incomplete)
    assert [(d.invoice_number[-4:], d.amount) for d in issued] == [("0001", 900), ("0002", 1800)]
    assert all(t.invoice_id is not None for t in ledger(incomplete))


def test_a_refund_waits_for_its_credit_note_while_the_identity_is_incomplete(
    make_service: Callable[..., Service], tmp_path: Path
) -> None:
    complete = make_service(invoice_dir=tmp_path)
    customer = customer_of(complete)
    paid = se.invoice("in_cn", customer, "sub_cn", amount=1080, payment_intent="pi_cn")
    posted(complete, se.event("invoice.paid", paid))
    complete.stop()
    incomplete = make_service(invoice_dir=tmp_path, seller_vat_number="")
    refund = se.charge_refunded(customer, "pi_cn", 1080, [("re_cn", 1080)])
    posted(incomplete, se.event("charge.refunded", refund))
    assert [d.kind for d in documents(incomplete)] == ["invoice"]
    assert _readiness(incomplete)["details"]["invoicing"]["pending_documents"] == 1
    incomplete.stop()
    again = make_service(invoice_dir=tmp_path)
    assert [(d.kind, d.amount) for d in documents(again)] == [
        ("invoice", 1080),
        ("credit_note", -1080),
    ]


def test_a_vat_exempt_seller_needs_no_vat_number(
    make_service: Callable[..., Service], tmp_path: Path
) -> None:
    service = make_service(invoice_dir=tmp_path, seller_vat_number="", seller_vat_exempt=True)
    posted(service, se.event("invoice.paid", se.invoice("in_ex", customer_of(service), None)))
    assert len(documents(service)) == 1
    assert _readiness(service)["details"]["invoicing"]["seller_identity"] == "complete"


def test_serve_warns_at_start_when_the_seller_identity_is_incomplete(tmp_path: Path) -> None:
    port = free_port()
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("METERBILL_SELLER")
    }
    env.update(
        METERBILL_DATABASE_URL=f"sqlite:///{tmp_path}/serve.db",
        METERBILL_JWT_SECRET="x" * 32,
        METERBILL_SELLER_NAME="Nuage Conseil SAS",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "meterbill", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "meterbill serve never answered"
                time.sleep(0.2)
        assert ready.status_code == 200
        assert ready.json()["details"]["invoicing"]["missing_settings"] == [
            "METERBILL_SELLER_ADDRESS",
            "METERBILL_SELLER_SIREN",
            "METERBILL_SELLER_VAT_NUMBER",
        ]
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
    first_lines = output.splitlines()[:3]
    assert any(
        line.startswith("warning:") and "METERBILL_SELLER_SIREN" in line for line in first_lines
    ), output


def _with_buyer_vat(stripe_invoice: dict[str, Any], vat_number: str, country: str) -> None:
    stripe_invoice["customer_tax_ids"] = [{"type": "eu_vat", "value": vat_number}]
    stripe_invoice["customer_address"] = {
        "line1": "Friedrichstraße 1",
        "postal_code": "10117",
        "city": "Berlin",
        "country": country,
    }


def _pdf_text(service: Service, number: str) -> str:
    response = service.client.get(f"/api/v1/billing/invoices/{number}/pdf", headers=service.auth())
    assert response.status_code == 200
    reader = PdfReader(io.BytesIO(response.content))
    return "\n".join(page.extract_text() for page in reader.pages)


def test_an_eu_business_buyer_charged_no_vat_is_invoiced_under_reverse_charge(
    make_service: Callable[..., Service], tmp_path: Path
) -> None:
    service = make_service(invoice_dir=tmp_path)
    stripe_invoice = se.invoice("in_rc", customer_of(service), "sub_rc", amount=1080)
    _with_buyer_vat(stripe_invoice, "DE123456789", "DE")
    posted(service, se.event("invoice.paid", stripe_invoice))
    (invoice,) = documents(service)
    # What was charged is the price before tax: no VAT is worked out of it.
    assert (invoice.amount_ht, invoice.amount_tva, invoice.amount) == (1080, 0, 1080)
    (line,) = lines(service, invoice)
    assert (line.vat_rate_bp, line.vat_category) == (0, "AE")
    body = invoice_json(service, invoice.invoice_number)
    assert body["lines"][0]["vat_category"] == "AE"
    (mention,) = body["vat_mentions"]
    assert "Autoliquidation" in mention
    assert "FR40812345678" in mention and "DE123456789" in mention
    text = _pdf_text(service, invoice.invoice_number)
    assert "Autoliquidation" in text and "DE123456789" in text


def test_reverse_charge_only_for_another_eu_state_and_when_stripe_charged_no_vat(
    make_service: Callable[..., Service], tmp_path: Path
) -> None:
    service = make_service(invoice_dir=tmp_path)
    customer = customer_of(service)
    french = se.invoice("in_fr", customer, None, amount=1080)
    _with_buyer_vat(french, "FR40812345679", "FR")
    taxed = se.invoice("in_taxed", customer, None, amount=1080)
    _with_buyer_vat(taxed, "DE123456789", "DE")
    taxed["lines"]["data"][0].update(
        amount=900,
        taxes=[{"amount": 180, "tax_behavior": "exclusive", "taxable_amount": 900}],
    )
    taxed["total_taxes"] = [{"amount": 180, "tax_behavior": "exclusive", "taxable_amount": 900}]
    for stripe_invoice in (french, taxed):
        posted(service, se.event("invoice.paid", stripe_invoice))
    for document in documents(service):
        assert (document.amount_ht, document.amount_tva) == (900, 180)
        assert [line.vat_category for line in lines(service, document)] == ["S"]
        assert invoice_json(service, document.invoice_number)["vat_mentions"] == []
