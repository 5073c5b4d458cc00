"""UN/CEFACT Cross Industry Invoice (CII D16B) in the EN 16931 profile: the XML embedded
in a Factur-X PDF as `factur-x.xml`, and downloadable on its own.

Element order follows the XSD (a sequence in every type)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from lxml import etree

from meterbill.invoicing.einvoice import GUIDELINE_ID
from meterbill.invoicing.einvoice.document import EDocument, Line, Party, money, rate

RSM = "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
RAM = "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
QDT = "urn:un:unece:uncefact:data:standard:QualifiedDataType:100"
UDT = "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100"
NSMAP = {"rsm": RSM, "ram": RAM, "qdt": QDT, "udt": UDT}
SIREN_SCHEME = "0002"  # ISO 6523 ICD of the French SIRENE register
SIRET_SCHEME = "0009"
CARD_PAYMENT = "48"  # UNTDID 4461: bank card


def _el(parent: Any, tag: str, text: str | None = None, **attrs: str) -> Any:
    prefix, name = tag.split(":")
    element = etree.SubElement(parent, f"{{{NSMAP[prefix]}}}{name}", **attrs)
    if text is not None:
        element.text = text
    return element


def _date(parent: Any, tag: str, day: date, kind: str = "udt") -> None:
    holder = _el(parent, tag)
    _el(holder, f"{kind}:DateTimeString", day.strftime("%Y%m%d"), format="102")


def _price(value: Decimal) -> str:
    text = f"{value.quantize(Decimal('0.000001')).normalize():f}"
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


def _party(parent: Any, tag: str, party: Party) -> None:
    node = _el(parent, tag)
    _el(node, "ram:Name", party.name)
    if party.siren or party.siret:
        legal = _el(node, "ram:SpecifiedLegalOrganization")
        scheme = SIREN_SCHEME if party.siren else SIRET_SCHEME
        _el(legal, "ram:ID", party.siren or party.siret, schemeID=scheme)
    address = _el(node, "ram:PostalTradeAddress")
    if party.postal_code:
        _el(address, "ram:PostcodeCode", party.postal_code)
    for tag_name, text in zip(("LineOne", "LineTwo", "LineThree"), party.street, strict=False):
        _el(address, f"ram:{tag_name}", text)
    if party.city:
        _el(address, "ram:CityName", party.city)
    _el(address, "ram:CountryID", party.country)
    if party.email:
        uri = _el(node, "ram:URIUniversalCommunication")
        _el(uri, "ram:URIID", party.email, schemeID="EM")
    if party.vat_number:
        tax = _el(node, "ram:SpecifiedTaxRegistration")
        _el(tax, "ram:ID", party.vat_number, schemeID="VA")


def _period(parent: Any, start: date | None, end: date | None) -> None:
    if not (start or end):
        return
    period = _el(parent, "ram:BillingSpecifiedPeriod")
    if start:
        _date(period, "ram:StartDateTime", start)
    if end:
        _date(period, "ram:EndDateTime", end)


def _line(parent: Any, line: Line) -> None:
    item = _el(parent, "ram:IncludedSupplyChainTradeLineItem")
    _el(_el(item, "ram:AssociatedDocumentLineDocument"), "ram:LineID", str(line.position))
    _el(_el(item, "ram:SpecifiedTradeProduct"), "ram:Name", line.description)
    agreement = _el(item, "ram:SpecifiedLineTradeAgreement")
    _el(
        _el(agreement, "ram:NetPriceProductTradePrice"), "ram:ChargeAmount", _price(line.unit_price)
    )
    delivery = _el(item, "ram:SpecifiedLineTradeDelivery")
    _el(delivery, "ram:BilledQuantity", str(line.quantity), unitCode="C62")
    settlement = _el(item, "ram:SpecifiedLineTradeSettlement")
    tax = _el(settlement, "ram:ApplicableTradeTax")
    _el(tax, "ram:TypeCode", "VAT")
    _el(tax, "ram:CategoryCode", line.vat_category)
    _el(tax, "ram:RateApplicablePercent", rate(line.vat_rate_bp))
    _period(settlement, line.period_start, line.period_end)
    summation = _el(settlement, "ram:SpecifiedTradeSettlementLineMonetarySummation")
    _el(summation, "ram:LineTotalAmount", money(line.net_amount))


def _settlement(parent: Any, doc: EDocument) -> None:
    settlement = _el(parent, "ram:ApplicableHeaderTradeSettlement")
    _el(settlement, "ram:InvoiceCurrencyCode", doc.currency)
    means = _el(settlement, "ram:SpecifiedTradeSettlementPaymentMeans")
    _el(means, "ram:TypeCode", CARD_PAYMENT)
    for group in doc.vat:
        tax = _el(settlement, "ram:ApplicableTradeTax")
        _el(tax, "ram:CalculatedAmount", money(group.amount))
        _el(tax, "ram:TypeCode", "VAT")
        if group.exemption_reason:
            _el(tax, "ram:ExemptionReason", group.exemption_reason)
        _el(tax, "ram:BasisAmount", money(group.basis))
        _el(tax, "ram:CategoryCode", group.category)
        if group.exemption_code:
            _el(tax, "ram:ExemptionReasonCode", group.exemption_code)
        _el(tax, "ram:RateApplicablePercent", rate(group.rate_bp))
    _period(settlement, doc.period_start, doc.period_end)
    terms = _el(settlement, "ram:SpecifiedTradePaymentTerms")
    paid = doc.paid_on.strftime("%d/%m/%Y") if doc.paid_on else ""
    verb = "Remboursé" if doc.type_code == "381" else "Payée"
    _el(terms, "ram:Description", f"{verb} le {paid} par carte bancaire (Stripe).")
    summation = _el(settlement, "ram:SpecifiedTradeSettlementHeaderMonetarySummation")
    _el(summation, "ram:LineTotalAmount", money(doc.line_total))
    _el(summation, "ram:TaxBasisTotalAmount", money(doc.tax_basis_total))
    _el(summation, "ram:TaxTotalAmount", money(doc.tax_total), currencyID=doc.currency)
    _el(summation, "ram:GrandTotalAmount", money(doc.grand_total))
    _el(summation, "ram:TotalPrepaidAmount", money(doc.prepaid))
    _el(summation, "ram:DuePayableAmount", money(doc.due))
    if doc.preceding_number:
        reference = _el(settlement, "ram:InvoiceReferencedDocument")
        _el(reference, "ram:IssuerAssignedID", doc.preceding_number)
        if doc.preceding_date:
            _date(reference, "ram:FormattedIssueDateTime", doc.preceding_date, "qdt")


def build_cii(doc: EDocument) -> bytes:
    """The document as CII XML (UTF-8), EN 16931 profile."""
    root = etree.Element(f"{{{RSM}}}CrossIndustryInvoice", nsmap=NSMAP)
    context = _el(root, "rsm:ExchangedDocumentContext")
    guideline = _el(context, "ram:GuidelineSpecifiedDocumentContextParameter")
    _el(guideline, "ram:ID", GUIDELINE_ID)
    header = _el(root, "rsm:ExchangedDocument")
    _el(header, "ram:ID", doc.number)
    _el(header, "ram:TypeCode", doc.type_code)
    _date(header, "ram:IssueDateTime", doc.issue_date)
    for subject, text in doc.notes:
        note = _el(header, "ram:IncludedNote")
        _el(note, "ram:Content", text)
        _el(note, "ram:SubjectCode", subject)
    transaction = _el(root, "rsm:SupplyChainTradeTransaction")
    for line in doc.lines:
        _line(transaction, line)
    agreement = _el(transaction, "ram:ApplicableHeaderTradeAgreement")
    _party(agreement, "ram:SellerTradeParty", doc.seller)
    _party(agreement, "ram:BuyerTradeParty", doc.buyer)
    delivery = _el(transaction, "ram:ApplicableHeaderTradeDelivery")
    if doc.period_end:
        event = _el(delivery, "ram:ActualDeliverySupplyChainEvent")
        _date(event, "ram:OccurrenceDateTime", doc.period_end)
    _settlement(transaction, doc)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))
