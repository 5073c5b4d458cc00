"""An issued document as EN 16931 sees it: parties, lines, VAT breakdown and totals, in
integer cents, with a credit note's amounts turned positive (its type code says it credits).

Built only from the document's frozen rows, so the XML of a document is the same whenever
it is generated.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from meterbill.invoicing.models import Invoice, InvoiceLine
from meterbill.invoicing.parties import REVERSE_CHARGE_MENTION, VAT_FRANCHISE_MENTION

INVOICE_TYPE = "380"  # UNTDID 1001: commercial invoice
CREDIT_NOTE_TYPE = "381"  # credit note
# Why a category carries no VAT (BT-120) and its code (BT-121, CEF VATEX list).
EXEMPTIONS = {
    "E": (VAT_FRANCHISE_MENTION, "VATEX-FR-FRANCHISE"),
    "AE": (REVERSE_CHARGE_MENTION, "VATEX-EU-AE"),
}


@dataclass(frozen=True)
class Party:
    name: str
    street: list[str]
    postal_code: str | None
    city: str | None
    country: str
    siren: str | None = None
    siret: str | None = None
    vat_number: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class Line:
    position: int
    description: str
    quantity: int  # negative for a discount line: prices are never negative (BR-27)
    unit_price: Decimal  # currency units, before tax
    net_amount: int  # cents, before tax
    vat_category: str
    vat_rate_bp: int
    vat_amount: int  # cents
    period_start: date | None
    period_end: date | None


@dataclass(frozen=True)
class VatBreakdown:
    category: str
    rate_bp: int
    basis: int
    amount: int
    line_count: int
    exemption_reason: str | None = None
    exemption_code: str | None = None


@dataclass(frozen=True)
class EDocument:
    number: str
    type_code: str
    issue_date: date
    currency: str
    seller: Party
    buyer: Party
    lines: list[Line]
    vat: list[VatBreakdown]
    line_total: int
    tax_basis_total: int
    tax_total: int
    grand_total: int
    prepaid: int
    due: int
    paid_on: date | None
    period_start: date | None
    period_end: date | None
    notes: list[tuple[str, str]] = field(default_factory=list)  # (subject code, text)
    preceding_number: str | None = None
    preceding_date: date | None = None
    business_buyer: bool = False


def local_date(moment: datetime | None, zone: str) -> date | None:
    """The calendar day of `moment` where the seller lives."""
    return moment.astimezone(ZoneInfo(zone)).date() if moment else None


def _address(lines: list[str]) -> tuple[list[str], str | None, str | None]:
    """Street lines, postal code and city out of printed address lines (``75002 Paris``)."""
    for index in range(len(lines) - 1, -1, -1):
        match = re.fullmatch(r"(\d{4,5})\s+(.+)", lines[index].strip())
        if match:
            return lines[:index], match.group(1), match.group(2)
    return lines, None, None


def _seller(snapshot: dict[str, Any], country: str) -> Party:
    street, postal_code, city = _address(list(snapshot.get("address") or []))
    siret = re.sub(r"\s", "", str(snapshot.get("siret") or "")) or None
    siren = re.sub(r"\s", "", str(snapshot.get("siren") or "")) or (siret[:9] if siret else None)
    return Party(
        name=str(snapshot.get("name") or ""),
        street=street,
        postal_code=postal_code,
        city=city,
        country=country,
        siren=siren,
        siret=siret,
        vat_number=str(snapshot.get("vat_number") or "") or None,
        email=str(snapshot.get("email") or "") or None,
    )


def _buyer(document: Invoice) -> Party:
    identity: dict[str, Any] = json.loads(document.buyer_identity or "{}")
    printed = (document.buyer_address or "").splitlines()
    street = list(identity.get("street") or [])
    postal_code, city = identity.get("postal_code"), identity.get("city")
    if not (street or postal_code or city):
        street, postal_code, city = _address(printed)
    return Party(
        name=document.buyer_name or document.buyer_email or "Client",
        street=street,
        postal_code=postal_code,
        city=city,
        country=str(identity.get("country") or "FR"),
        siren=identity.get("siren"),
        siret=identity.get("siret"),
        vat_number=document.buyer_vat_number,
        email=document.buyer_email,
    )


def _vat_breakdown(lines: list[Line]) -> list[VatBreakdown]:
    groups: dict[tuple[str, int], list[Line]] = {}
    for line in lines:
        groups.setdefault((line.vat_category, line.vat_rate_bp), []).append(line)
    breakdown = []
    for (category, rate), members in sorted(groups.items()):
        reason, code = EXEMPTIONS.get(category, (None, None))
        breakdown.append(
            VatBreakdown(
                category=category,
                rate_bp=rate,
                basis=sum(line.net_amount for line in members),
                amount=sum(line.vat_amount for line in members),
                line_count=len(members),
                exemption_reason=reason,
                exemption_code=code,
            )
        )
    return breakdown


def _line(line: InvoiceLine, sign: int, zone: str) -> Line:
    net = sign * line.amount_ht
    quantity = line.quantity if line.quantity > 0 else 1
    quantity = quantity if net >= 0 else -quantity
    price = (Decimal(sign) * Decimal(line.unit_price_ht) / 100).copy_abs()
    if net < 0 and price == 0:
        price = Decimal(-net) / 100
    return Line(
        position=line.position,
        description=line.description,
        quantity=quantity,
        unit_price=price,
        net_amount=net,
        vat_category=line.vat_category,
        vat_rate_bp=line.vat_rate_bp,
        vat_amount=sign * line.amount_tva,
        period_start=local_date(line.period_start, zone),
        period_end=local_date(line.period_end, zone),
    )


def build_edocument(
    document: Invoice,
    lines: list[InvoiceLine],
    credited: Invoice | None,
    *,
    zone: str = "Europe/Paris",
    seller_country: str = "FR",
) -> EDocument:
    """The EN 16931 view of an issued invoice or credit note."""
    credit = document.kind == "credit_note"
    sign = -1 if credit else 1
    snapshot: dict[str, Any] = json.loads(document.seller or "{}")
    items = [_line(line, sign, zone) for line in lines]
    vat = _vat_breakdown(items)
    line_total = sum(line.net_amount for line in items)
    tax_total = sum(group.amount for group in vat)
    grand_total = line_total + tax_total
    notes = [("REG", mention) for mention in snapshot.get("mentions") or []]
    if any(line.vat_category == "AE" for line in items):
        notes.insert(0, ("TXD", REVERSE_CHARGE_MENTION))
    identity = json.loads(document.buyer_identity or "{}")
    return EDocument(
        number=document.invoice_number,
        type_code=CREDIT_NOTE_TYPE if credit else INVOICE_TYPE,
        issue_date=local_date(document.issued_at, zone) or document.issued_at.date(),
        currency=document.currency,
        seller=_seller(snapshot, seller_country),
        buyer=_buyer(document),
        lines=items,
        vat=vat,
        line_total=line_total,
        tax_basis_total=line_total,
        tax_total=tax_total,
        grand_total=grand_total,
        prepaid=grand_total,  # paid by card at Stripe (refunded, for a credit note)
        due=0,
        paid_on=local_date(document.paid_at or document.issued_at, zone),
        period_start=local_date(document.service_start, zone),
        period_end=local_date(document.service_end, zone),
        notes=notes,
        preceding_number=credited.invoice_number if credited else None,
        preceding_date=local_date(credited.issued_at, zone) if credited else None,
        business_buyer=bool(identity.get("business") or document.buyer_vat_number),
    )


def money(cents: int) -> str:
    """Cents as the XML writes amounts: ``10.80``."""
    return f"{Decimal(cents) / 100:.2f}"


def rate(basis_points: int) -> str:
    return f"{Decimal(basis_points) / 100:.2f}"
