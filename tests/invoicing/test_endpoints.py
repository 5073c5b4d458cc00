"""GET /api/v1/billing/invoices, /{number}, /{number}/pdf; and the PDF's content."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pypdf import PdfReader
from sqlalchemy import select

from meterbill.invoicing.documents import RENDER_JOB
from meterbill.invoicing.models import DocumentSeal
from meterbill.jobs.models import Job
from meterbill.jobs.worker import Worker
from tests import stripe_events as se
from tests.conftest import Clock, Service
from tests.invoicing.helpers import customer_of, documents, posted

SELLER = {
    "seller_name": "Nuage Conseil SAS",
    "seller_address": "12 rue de la Paix\n75002 Paris",
    "seller_siren": "812345678",
    "seller_siret": "81234567800021",
    "seller_vat_number": "FR40812345678",
    "seller_legal_form": "SAS au capital de 10 000 €",
    "seller_rcs": "RCS Paris 812 345 678",
}
ISSUED = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)


@pytest.fixture
def invoicing(make_service: Callable[..., Service], tmp_path: Path) -> Service:
    return make_service(clock=Clock(ISSUED), invoice_dir=tmp_path / "pdf", **SELLER)


def _issue(service: Service, count: int, user_id: str = "user-1") -> list[str]:
    customer = customer_of(service, user_id)
    for index in range(count):
        service.clock.fixed = ISSUED + timedelta(hours=index)
        stripe_invoice = se.invoice(f"in_{user_id}_{index}", customer, None, amount=1080 + index)
        posted(service, se.event("invoice.paid", stripe_invoice))
    service.clock.fixed = ISSUED
    return [d.invoice_number for d in documents(service) if d.user_id == user_id]


def test_the_list_is_the_users_own_newest_first_and_paginated(invoicing: Service) -> None:
    mine = _issue(invoicing, 5)
    _issue(invoicing, 1, "user-2")
    seen: list[str] = []
    for page in (1, 2, 3):
        response = invoicing.client.get(
            "/api/v1/billing/invoices",
            params={"page": page, "per_page": 2},
            headers=invoicing.auth("user-1"),
        )
        assert response.status_code == 200
        body = response.json()
        assert body["total"] == 5 and body["has_more"] == (page < 3)
        seen += [item["number"] for item in body["items"]]
    assert seen == list(reversed(mine))
    first = invoicing.client.get("/api/v1/billing/invoices", headers=invoicing.auth()).json()
    assert first["items"][0]["amount_ttc"] == 1084 and first["items"][0]["kind"] == "invoice"
    for params in ({"per_page": 0}, {"page": 2**100}, {"page": "x"}):
        bad = invoicing.client.get(
            "/api/v1/billing/invoices", params=params, headers=invoicing.auth()
        )
        assert bad.status_code == 422 and bad.json()["code"] == "validation_error"


def test_another_users_invoice_answers_404_in_json_and_pdf(invoicing: Service) -> None:
    (theirs,) = _issue(invoicing, 1, "user-2")
    for suffix in ("", "/pdf"):
        response = invoicing.client.get(
            f"/api/v1/billing/invoices/{theirs}{suffix}", headers=invoicing.auth("user-1")
        )
        assert response.status_code == 404
        assert response.json()["code"] == "invoice_not_found"
    mine = invoicing.client.get(
        f"/api/v1/billing/invoices/{theirs}", headers=invoicing.auth("user-2")
    )
    assert mine.status_code == 200
    anonymous = invoicing.client.get(f"/api/v1/billing/invoices/{theirs}")
    assert anonymous.status_code == 401


def _pdf_text(service: Service, number: str) -> str:
    response = service.client.get(f"/api/v1/billing/invoices/{number}/pdf", headers=service.auth())
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    reader = PdfReader(io.BytesIO(response.content))
    return "\n".join(page.extract_text() for page in reader.pages)


def test_the_pdf_holds_number_dates_seller_buyer_and_amounts(invoicing: Service) -> None:
    (number,) = _issue(invoicing, 1)
    text = _pdf_text(invoicing, number)
    for expected in (
        "Facture",
        number,
        "03/11/2026",  # date of issue
        "Nuage Conseil SAS",
        "SIRET : 81234567800021",
        "FR40812345678",
        "RCS Paris 812 345 678",
        "Buyer SAS",
        "buyer@example.com",
        "Total HT",
        "9,00 €",
        "TVA",
        "1,80 €",
        "Total TTC",
        "10,80 €",
        "20 %",
        "indemnité forfaitaire",
    ):
        assert expected in text, expected


def test_the_credit_note_pdf_names_the_invoice_it_credits(invoicing: Service) -> None:
    customer = customer_of(invoicing)
    posted(
        invoicing,
        se.event(
            "invoice.paid", se.invoice("in_c", customer, None, amount=1080, payment_intent="pi_c")
        ),
    )
    refund = se.charge_refunded(customer, "pi_c", 1080, [("re_c", 540)])
    posted(invoicing, se.event("charge.refunded", refund))
    invoice, credit = documents(invoicing)
    text = _pdf_text(invoicing, credit.invoice_number)
    for expected in (
        "Avoir",
        credit.invoice_number,
        invoice.invoice_number,
        "-4,50 €",
        "-0,90 €",
        "-5,40 €",
    ):
        assert expected in text, expected


def test_the_worker_renders_the_pdf_and_not_the_webhook(invoicing: Service) -> None:
    _issue(invoicing, 1)
    (invoice,) = documents(invoicing)
    path = Path(invoicing.settings.invoice_dir) / str(invoice.pdf_path)
    time.sleep(0.5)  # nothing is rendered after the webhook's answer either
    assert not path.is_file()
    with invoicing.db.reading() as session:
        assert session.scalars(select(Job.payload).where(Job.kind == RENDER_JOB)).all() == [
            json.dumps({"invoice_number": invoice.invoice_number}, separators=(",", ":"))
        ]
    Worker(invoicing.settings, invoicing.db, clock=Clock(), schedules=()).run_pending()
    assert path.is_file() and path.with_suffix(".xml").is_file()
    with invoicing.db.reading() as session:
        assert session.get(DocumentSeal, invoice.id) is not None


def test_a_missing_pdf_is_rendered_again_on_demand(invoicing: Service) -> None:
    (number,) = _issue(invoicing, 1)
    (invoice,) = documents(invoicing)
    path = Path(invoicing.settings.invoice_dir) / str(invoice.pdf_path)
    assert invoice.pdf_path == f"2026/11/{number}.pdf"
    Worker(invoicing.settings, invoicing.db, clock=Clock(), schedules=()).run_pending()
    assert path.is_file()
    path.unlink()
    assert number in _pdf_text(invoicing, number)
    assert path.is_file()
