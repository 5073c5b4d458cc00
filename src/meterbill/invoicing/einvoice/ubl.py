"""OASIS UBL 2.1 (Invoice or CreditNote) following EN 16931: the same document as the CII,
for receivers whose platform takes UBL."""

from __future__ import annotations

from datetime import date
from typing import Any

from lxml import etree

from meterbill.invoicing.einvoice import GUIDELINE_ID
from meterbill.invoicing.einvoice.cii import CARD_PAYMENT, SIREN_SCHEME, SIRET_SCHEME
from meterbill.invoicing.einvoice.document import (
    CREDIT_NOTE_TYPE,
    EDocument,
    Line,
    Party,
    money,
    rate,
)

CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
INVOICE_NS = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
CREDIT_NOTE_NS = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"
_PREFIXES = {"cbc": CBC, "cac": CAC}


def _el(parent: Any, tag: str, text: str | None = None, **attrs: str) -> Any:
    prefix, name = tag.split(":")
    element = etree.SubElement(parent, f"{{{_PREFIXES[prefix]}}}{name}", **attrs)
    if text is not None:
        element.text = text
    return element


def _day(value: date) -> str:
    return value.isoformat()


def _period(parent: Any, start: date | None, end: date | None) -> None:
    if not (start or end):
        return
    period = _el(parent, "cac:InvoicePeriod")
    if start:
        _el(period, "cbc:StartDate", _day(start))
    if end:
        _el(period, "cbc:EndDate", _day(end))


def _party(parent: Any, tag: str, party: Party) -> None:
    node = _el(_el(parent, tag), "cac:Party")
    if party.email:
        _el(node, "cbc:EndpointID", party.email, schemeID="EM")
    _el(_el(node, "cac:PartyName"), "cbc:Name", party.name)
    address = _el(node, "cac:PostalAddress")
    for tag_name, text in zip(("StreetName", "AdditionalStreetName"), party.street, strict=False):
        _el(address, f"cbc:{tag_name}", text)
    if party.city:
        _el(address, "cbc:CityName", party.city)
    if party.postal_code:
        _el(address, "cbc:PostalZone", party.postal_code)
    _el(_el(address, "cac:Country"), "cbc:IdentificationCode", party.country)
    if party.vat_number:
        scheme = _el(node, "cac:PartyTaxScheme")
        _el(scheme, "cbc:CompanyID", party.vat_number)
        _el(_el(scheme, "cac:TaxScheme"), "cbc:ID", "VAT")
    legal = _el(node, "cac:PartyLegalEntity")
    _el(legal, "cbc:RegistrationName", party.name)
    if party.siren or party.siret:
        scheme_id = SIREN_SCHEME if party.siren else SIRET_SCHEME
        _el(legal, "cbc:CompanyID", party.siren or party.siret, schemeID=scheme_id)


def _category(parent: Any, tag: str, category: str, rate_bp: int, reason: str | None) -> None:
    node = _el(parent, tag)
    _el(node, "cbc:ID", category)
    _el(node, "cbc:Percent", rate(rate_bp))
    if reason:
        _el(node, "cbc:TaxExemptionReason", reason)
    _el(_el(node, "cac:TaxScheme"), "cbc:ID", "VAT")


def _line(parent: Any, line: Line, credit: bool, currency: str) -> None:
    node = _el(parent, "cac:CreditNoteLine" if credit else "cac:InvoiceLine")
    _el(node, "cbc:ID", str(line.position))
    quantity_tag = "cbc:CreditedQuantity" if credit else "cbc:InvoicedQuantity"
    _el(node, quantity_tag, str(line.quantity), unitCode="C62")
    _el(node, "cbc:LineExtensionAmount", money(line.net_amount), currencyID=currency)
    _period(node, line.period_start, line.period_end)
    item = _el(node, "cac:Item")
    _el(item, "cbc:Name", line.description)
    _category(item, "cac:ClassifiedTaxCategory", line.vat_category, line.vat_rate_bp, None)
    price = _el(node, "cac:Price")
    _el(price, "cbc:PriceAmount", f"{line.unit_price:f}", currencyID=currency)


def build_ubl(doc: EDocument) -> bytes:
    """The document as UBL 2.1 XML (UTF-8): an Invoice, or a CreditNote."""
    credit = doc.type_code == CREDIT_NOTE_TYPE
    namespace = CREDIT_NOTE_NS if credit else INVOICE_NS
    root = etree.Element(
        f"{{{namespace}}}{'CreditNote' if credit else 'Invoice'}",
        nsmap={None: namespace, "cac": CAC, "cbc": CBC},
    )
    currency = doc.currency
    _el(root, "cbc:CustomizationID", GUIDELINE_ID)
    _el(root, "cbc:ID", doc.number)
    _el(root, "cbc:IssueDate", _day(doc.issue_date))
    _el(root, "cbc:CreditNoteTypeCode" if credit else "cbc:InvoiceTypeCode", doc.type_code)
    for _, text in doc.notes:
        _el(root, "cbc:Note", text)
    _el(root, "cbc:DocumentCurrencyCode", currency)
    _period(root, doc.period_start, doc.period_end)
    if doc.preceding_number:
        reference = _el(_el(root, "cac:BillingReference"), "cac:InvoiceDocumentReference")
        _el(reference, "cbc:ID", doc.preceding_number)
        if doc.preceding_date:
            _el(reference, "cbc:IssueDate", _day(doc.preceding_date))
    _party(root, "cac:AccountingSupplierParty", doc.seller)
    _party(root, "cac:AccountingCustomerParty", doc.buyer)
    _el(_el(root, "cac:PaymentMeans"), "cbc:PaymentMeansCode", CARD_PAYMENT)
    paid = doc.paid_on.strftime("%d/%m/%Y") if doc.paid_on else ""
    _el(_el(root, "cac:PaymentTerms"), "cbc:Note", f"Réglé le {paid} par carte bancaire.")
    total = _el(root, "cac:TaxTotal")
    _el(total, "cbc:TaxAmount", money(doc.tax_total), currencyID=currency)
    for group in doc.vat:
        sub = _el(total, "cac:TaxSubtotal")
        _el(sub, "cbc:TaxableAmount", money(group.basis), currencyID=currency)
        _el(sub, "cbc:TaxAmount", money(group.amount), currencyID=currency)
        _category(sub, "cac:TaxCategory", group.category, group.rate_bp, group.exemption_reason)
    sums = _el(root, "cac:LegalMonetaryTotal")
    _el(sums, "cbc:LineExtensionAmount", money(doc.line_total), currencyID=currency)
    _el(sums, "cbc:TaxExclusiveAmount", money(doc.tax_basis_total), currencyID=currency)
    _el(sums, "cbc:TaxInclusiveAmount", money(doc.grand_total), currencyID=currency)
    _el(sums, "cbc:PrepaidAmount", money(doc.prepaid), currencyID=currency)
    _el(sums, "cbc:PayableAmount", money(doc.due), currencyID=currency)
    for line in doc.lines:
        _line(root, line, credit, currency)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))
