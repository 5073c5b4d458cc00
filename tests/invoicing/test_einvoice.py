"""Factur-X EN 16931: every invoice and credit note as CII (valid against the official XSD,
read back by an independent parser with the JSON's totals), UBL, and a PDF/A-3 that embeds
the CII with the XMP metadata Factur-X asks for."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from drafthorse.models.document import Document
from facturx import xml_check_xsd
from lxml import etree
from pypdf import PdfReader

from meterbill.invoicing.einvoice.rules import check_business_rules
from meterbill.invoicing.einvoice.service import load_edocument
from tests import stripe_events as se
from tests.conftest import Service
from tests.invoicing.helpers import customer_of, documents, invoice_json, posted

FR_B2B_IDS = [
    {"type": "eu_vat", "value": "FR83404833048"},
    {"type": "fr_siren", "value": "404833048"},
]
DE_B2B_IDS = [{"type": "eu_vat", "value": "DE123456789"}]
SCENARIOS: dict[str, tuple[dict[str, Any], list[dict[str, str]], str]] = {
    # name: (service settings, buyer tax ids, buyer country)
    "fr_b2c": ({}, [], "FR"),
    "fr_b2b": ({}, FR_B2B_IDS, "FR"),
    "eu_b2b_reverse_charge": ({}, DE_B2B_IDS, "DE"),
    "vat_exempt_seller": ({"seller_vat_exempt": True, "seller_vat_number": ""}, [], "FR"),
}
CATEGORY = {"fr_b2c": "S", "fr_b2b": "S", "eu_b2b_reverse_charge": "AE", "vat_exempt_seller": "E"}


def _issue(service: Service, tax_ids: list[dict[str, str]], country: str) -> tuple[str, str]:
    customer = customer_of(service)
    stripe_invoice = se.invoice("in_fx", customer, "sub_fx", amount=1080, payment_intent="pi_fx")
    stripe_invoice["customer_tax_ids"] = tax_ids
    stripe_invoice["customer_address"] = {
        "line1": "3 avenue des Clients",
        "postal_code": "69002" if country == "FR" else "10117",
        "city": "Lyon" if country == "FR" else "Berlin",
        "country": country,
    }
    posted(service, se.event("invoice.paid", stripe_invoice))
    refund = se.charge_refunded(customer, "pi_fx", 1080, [("re_fx", 300)])
    posted(service, se.event("charge.refunded", refund))
    invoice, credit = documents(service)
    return invoice.invoice_number, credit.invoice_number


def _xml(service: Service, number: str, fmt: str = "cii") -> bytes:
    response = service.client.get(
        f"/api/v1/billing/invoices/{number}/xml", params={"format": fmt}, headers=service.auth()
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    return response.content


def _amount(element: Any) -> Decimal:
    """drafthorse keeps amounts in `_amount` (currency elements) or `_value` (decimals)."""
    value = getattr(element, "_amount", None)
    return Decimal(str(value if value is not None else element._value))


def _cents(value: Decimal) -> int:
    return int(value * 100)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_invoice_and_credit_note_is_valid_cii_with_the_jsons_totals(
    make_service: Callable[..., Service], tmp_path: Path, scenario: str
) -> None:
    overrides, tax_ids, country = SCENARIOS[scenario]
    service = make_service(invoice_dir=tmp_path, **overrides)
    for number in _issue(service, tax_ids, country):
        body = invoice_json(service, number)
        assert body["einvoice_profile"] == "factur-x:en16931"
        xml = _xml(service, number)
        assert xml_check_xsd(xml, flavor="factur-x", level="en16931")  # raises when invalid
        parsed = Document.parse(xml)
        credit = body["kind"] == "credit_note"
        assert str(parsed.header.type_code) == ("381" if credit else "380")
        assert str(parsed.header.id) == number
        sums = parsed.trade.settlement.monetary_summation
        sign = -1 if credit else 1
        assert _cents(_amount(sums.grand_total)) == sign * body["amount_ttc"]
        assert _cents(_amount(sums.tax_basis_total)) == sign * body["amount_ht"]
        ((tax_total, currency),) = sums.tax_total_other_currency.children
        assert (_cents(Decimal(tax_total)), currency) == (sign * body["amount_tva"], "EUR")
        assert _cents(_amount(sums.due_amount)) == 0  # paid (refunded) at Stripe
        lines = [
            _cents(_amount(item.settlement.monetary_summation.total_amount))
            for item in parsed.trade.items.children
        ]
        assert lines == [sign * line["amount_ht"] for line in body["lines"]]
        (breakdown,) = parsed.trade.settlement.trade_tax.children
        assert str(breakdown.category_code) == CATEGORY[scenario]
        assert _cents(_amount(breakdown.basis_amount)) == sign * body["amount_ht"]
        seller = parsed.trade.agreement.seller
        assert str(seller.name) == "Nuage Conseil SAS"
        assert str(seller.legal_organization.id._text) == "812345678"
        if credit:
            reference = parsed.trade.settlement.invoice_referenced_document
            assert str(reference.issuer_assigned_id).startswith(body["credited_invoice"])
        root = etree.fromstring(xml)
        buyer_vat = root.xpath(
            "//ram:BuyerTradeParty/ram:SpecifiedTaxRegistration/ram:ID/text()",
            namespaces=root.nsmap,
        )
        assert buyer_vat == [t["value"] for t in tax_ids if t["type"] == "eu_vat"]
        if scenario == "eu_b2b_reverse_charge":
            assert root.xpath("//ram:ExemptionReasonCode/text()", namespaces=root.nsmap) == [
                "VATEX-EU-AE"
            ]
        if scenario == "vat_exempt_seller":
            reason = root.xpath("//ram:ExemptionReason/text()", namespaces=root.nsmap)
            assert reason == ["TVA non applicable, art. 293 B du CGI"]
        ubl = etree.fromstring(_xml(service, number, "ubl"))
        ns = {"cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"}
        payable = ubl.xpath("//*[local-name()='TaxInclusiveAmount']/text()")
        assert _cents(Decimal(payable[0])) == sign * body["amount_ttc"]
        assert ubl.xpath("/*/cbc:ID/text()", namespaces=ns) == [number]


def test_the_pdf_is_a_pdf_a3_with_the_cii_embedded_and_factur_x_metadata(
    make_service: Callable[..., Service], tmp_path: Path
) -> None:
    service = make_service(invoice_dir=tmp_path)
    for number in _issue(service, FR_B2B_IDS, "FR"):
        response = service.client.get(
            f"/api/v1/billing/invoices/{number}/pdf", headers=service.auth()
        )
        assert response.status_code == 200
        reader = PdfReader(io.BytesIO(response.content))
        root = reader.trailer["/Root"]
        names = root["/Names"]["/EmbeddedFiles"]["/Names"]
        assert names[0] == "factur-x.xml"
        filespec = names[1].get_object()
        assert filespec["/AFRelationship"] == "/Alternative"
        assert [entry.get_object()["/F"] for entry in root["/AF"]] == ["factur-x.xml"]
        embedded = filespec["/EF"]["/F"].get_object().get_data()
        assert embedded == _xml(service, number)
        xmp = root["/Metadata"].get_object().get_data().decode()
        assert "<pdfaid:part>3</pdfaid:part>" in xmp
        assert "<fx:ConformanceLevel>EN 16931</fx:ConformanceLevel>" in xmp
        assert "<fx:DocumentFileName>factur-x.xml</fx:DocumentFileName>" in xmp
        assert root["/OutputIntents"]  # PDF/A's colour profile


def test_business_rules_catch_totals_and_breakdowns_that_do_not_add_up(
    make_service: Callable[..., Service], tmp_path: Path
) -> None:
    service = make_service(invoice_dir=tmp_path)
    invoice_number, _ = _issue(service, DE_B2B_IDS, "DE")
    good = load_edocument(service.db, service.settings, invoice_number)
    assert check_business_rules(good) == []
    broken_totals = replace(good, grand_total=good.grand_total + 1)
    assert {v.rule for v in check_business_rules(broken_totals)} == {"BR-CO-15", "BR-CO-16"}
    broken_line = replace(good, line_total=good.line_total - 1, tax_basis_total=good.line_total)
    assert "BR-CO-10" in {v.rule for v in check_business_rules(broken_line)}
    (group,) = good.vat
    taxed_reverse_charge = replace(good, vat=[replace(group, amount=100)], tax_total=100)
    rules = {v.rule for v in check_business_rules(taxed_reverse_charge)}
    assert "BR-AE-09" in rules
    no_buyer_vat = replace(good, buyer=replace(good.buyer, vat_number=None))
    assert {v.rule for v in check_business_rules(no_buyer_vat)} == {"BR-AE-02"}


def test_an_unknown_xml_format_is_a_422_and_another_users_document_a_404(
    make_service: Callable[..., Service], tmp_path: Path
) -> None:
    service = make_service(invoice_dir=tmp_path)
    number, _ = _issue(service, [], "FR")
    path = f"/api/v1/billing/invoices/{number}/xml"
    bad = service.client.get(path, params={"format": "pdf"}, headers=service.auth())
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
    other = service.client.get(path, headers=service.auth("someone-else"))
    assert other.status_code == 404 and other.json()["code"]


def test_a_document_issued_before_the_rules_gets_no_e_invoice_and_the_audit_names_it(
    make_service: Callable[..., Service], tmp_path: Path
) -> None:
    """A document from before the seller's identity was required (no VAT number on a
    taxed sale): its PDF is served without an e-invoice, its XML is refused (409) and
    `meterbill invoices audit` names the rule it breaks."""
    from datetime import UTC, datetime

    from typer.testing import CliRunner

    from meterbill.cli import app
    from meterbill.invoicing.amounts import LineDraft
    from meterbill.invoicing.documents import INVOICE_SERIES, write_document
    from meterbill.invoicing.parties import Buyer
    from tests.conftest import TEST_SELLER

    service = make_service(invoice_dir=tmp_path)
    customer_of(service)
    with service.db.transaction() as session:
        legacy = write_document(
            session,
            series=INVOICE_SERIES,
            kind="invoice",
            user_id="user-1",
            currency="EUR",
            lines=[LineDraft("Premium", 1, "900", 2000, 900, 180, 1080)],
            seller={"name": "Ancien vendeur", "address": ["1 rue X", "75001 Paris"]},
            buyer=Buyer("Client", "client@example.com"),
            now=datetime.now(UTC),
        )
        number = legacy.invoice_number
    xml = service.client.get(f"/api/v1/billing/invoices/{number}/xml", headers=service.auth())
    assert xml.status_code == 409 and xml.json()["code"] == "einvoice_rules_broken"
    pdf = service.client.get(f"/api/v1/billing/invoices/{number}/pdf", headers=service.auth())
    assert pdf.status_code == 200
    assert "/EmbeddedFiles" not in str(PdfReader(io.BytesIO(pdf.content)).trailer["/Root"])
    env = {
        "METERBILL_DATABASE_URL": service.settings.database_url,
        "METERBILL_INVOICE_DIR": str(tmp_path),
        **{f"METERBILL_{key.upper()}": value for key, value in TEST_SELLER.items()},
    }
    result = CliRunner().invoke(app, ["invoices", "audit"], env=env)
    assert result.exit_code == 1
    assert f"{number}\ten16931\tBR-S-02" in result.output
