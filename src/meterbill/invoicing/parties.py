"""Who sells (from settings) and who buys (from the Stripe customer) on an invoice."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from meterbill.billing.gateway import StripeGateway
from meterbill.config import Settings
from meterbill.errors import MeterbillError

log = logging.getLogger("meterbill.invoicing")
VAT_FRANCHISE_MENTION = "TVA non applicable, art. 293 B du CGI"
REVERSE_CHARGE_MENTION = "Autoliquidation"
# VAT number prefixes of the EU member states (Greece writes EL).
_EU_STATES = "AT BE BG CY CZ DE DK EE EL ES FI FR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK"
EU_VAT_PREFIXES = frozenset(_EU_STATES.split(" "))


def _lines(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"\n|\\n|;", text) if part.strip()]


def seller_snapshot(settings: Settings) -> dict[str, Any]:
    """The seller's identity and legal mentions, copied onto each document at issue."""
    mentions = []
    if settings.seller_vat_exempt:
        mentions.append(VAT_FRANCHISE_MENTION)
    if settings.seller_late_payment_terms:
        mentions.append(settings.seller_late_payment_terms)
    mentions.extend(_lines(settings.seller_legal_mentions))
    return {
        "name": settings.seller_name,
        "address": _lines(settings.seller_address),
        "email": settings.seller_email,
        "siren": settings.seller_siren,
        "siret": settings.seller_siret,
        "vat_number": settings.seller_vat_number,
        "legal_form": settings.seller_legal_form,
        "rcs": settings.seller_rcs,
        "vat_exempt": settings.seller_vat_exempt,
        "mentions": mentions,
    }


def missing_seller_fields(settings: Settings) -> list[str]:
    """The settings French law requires on an invoice that are missing or malformed
    (art. 242 nonies A of annex II to the CGI): name, address, SIREN (or a SIRET, whose
    first nine digits are the SIREN) and the VAT number unless under the VAT franchise.
    No document gets a number while this list is not empty."""
    missing = []
    if not settings.seller_name.strip():
        missing.append("METERBILL_SELLER_NAME")
    if not _lines(settings.seller_address):
        missing.append("METERBILL_SELLER_ADDRESS")
    siren = re.sub(r"\s", "", settings.seller_siren)
    siret = re.sub(r"\s", "", settings.seller_siret)
    if siren and not re.fullmatch(r"\d{9}", siren):
        missing.append("METERBILL_SELLER_SIREN")
    elif siret and (not re.fullmatch(r"\d{14}", siret) or (siren and siret[:9] != siren)):
        missing.append("METERBILL_SELLER_SIRET")
    elif not siren and not siret:
        missing.append("METERBILL_SELLER_SIREN")
    if not settings.seller_vat_exempt and not settings.seller_vat_number.strip():
        missing.append("METERBILL_SELLER_VAT_NUMBER")
    return missing


def seller_siren(settings: Settings) -> str:
    """The seller's SIREN, given or read from the SIRET."""
    siren = re.sub(r"\s", "", settings.seller_siren)
    return siren or re.sub(r"\s", "", settings.seller_siret)[:9]


def vat_country(vat_number: str | None) -> str | None:
    """The member state of an EU VAT number (``DE123…`` → ``DE``; Greece's EL stays EL)."""
    prefix = (vat_number or "").strip().upper()[:2]
    return prefix if prefix in EU_VAT_PREFIXES else None


def is_reverse_charge(seller_vat_number: str, buyer_vat_number: str | None) -> bool:
    """A business buyer registered for VAT in another EU member state than the seller:
    the buyer accounts for the VAT (art. 196 of directive 2006/112/EC, art. 283-2 CGI)."""
    buyer_country = vat_country(buyer_vat_number)
    seller_country = vat_country(seller_vat_number) or "FR"
    return buyer_country is not None and buyer_country != seller_country


@dataclass(frozen=True)
class Buyer:
    name: str | None
    email: str | None
    address: list[str] = field(default_factory=list)
    vat_number: str | None = None
    # What an e-invoice needs beyond the printed lines: country, postal code, city,
    # street lines, SIREN / SIRET, and whether the buyer is a business (B2B).
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def is_business(self) -> bool:
        return bool(self.identity.get("business"))


def _address_lines(address: Any) -> list[str]:
    if not isinstance(address, dict):
        return []
    city = " ".join(str(address.get(k) or "").strip() for k in ("postal_code", "city")).strip()
    parts = [address.get("line1"), address.get("line2"), city, address.get("state")]
    country = address.get("country")
    if country and country != "FR":
        parts.append(country)
    return [str(part).strip() for part in parts if part and str(part).strip()]


def _tax_ids(invoice: dict[str, Any], customer: dict[str, Any]) -> list[dict[str, str]]:
    """The buyer's tax ids as the invoice recorded them, else as the customer has them."""
    listed = invoice.get("customer_tax_ids") or []
    if not listed:
        data = customer.get("tax_ids")
        listed = data.get("data") if isinstance(data, dict) else data
    return [
        {"type": str(item["type"]), "value": str(item["value"]).strip()}
        for item in listed or []
        if isinstance(item, dict) and item.get("type") and item.get("value")
    ]


def _tax_id(tax_ids: list[dict[str, str]], kind: str) -> str | None:
    return next((item["value"] for item in tax_ids if item["type"] == kind), None)


def _identity(
    address: Any, tax_ids: list[dict[str, str]], vat_number: str | None
) -> dict[str, Any]:
    address = address if isinstance(address, dict) else {}
    siret = _tax_id(tax_ids, "fr_siret")
    siren = _tax_id(tax_ids, "fr_siren") or (siret[:9] if siret else None)
    street = [str(address.get(k)).strip() for k in ("line1", "line2") if address.get(k)]
    country = str(address.get("country") or "").upper() or vat_country(vat_number) or "FR"
    return {
        "country": "GR" if country == "EL" else country,
        "postal_code": str(address.get("postal_code") or "").strip() or None,
        "city": str(address.get("city") or "").strip() or None,
        "street": street,
        "siren": siren,
        "siret": siret,
        "tax_ids": tax_ids,
        # A company identity (SIREN, SIRET or any VAT number) makes the sale B2B.
        "business": bool(siren or vat_number or any("vat" in t["type"] for t in tax_ids)),
    }


def buyer_of(
    gateway: StripeGateway, stripe_invoice: dict[str, Any], fallback_email: str | None
) -> Buyer:
    """The buyer as the Stripe customer describes them; when Stripe cannot be reached, as
    the invoice itself recorded them (`customer_name`, `customer_email`, `customer_address`)
    — an unreachable Stripe never fails the payment being recorded."""
    customer: dict[str, Any] = {}
    customer_id = stripe_invoice.get("customer")
    if isinstance(customer_id, dict):
        customer, customer_id = customer_id, customer_id.get("id")
    if not customer and isinstance(customer_id, str) and gateway.configured:
        try:
            customer = gateway.retrieve_customer(customer_id)
        except MeterbillError:
            log.warning(
                "buyer taken from the invoice: Stripe customer unavailable",
                extra={"customer": customer_id},
            )
    if customer.get("deleted"):
        customer = {}
    raw_address = customer.get("address") or stripe_invoice.get("customer_address")
    address = _address_lines(customer.get("address")) or _address_lines(
        stripe_invoice.get("customer_address")
    )
    tax_ids = _tax_ids(stripe_invoice, customer)
    vat_number = _tax_id(tax_ids, "eu_vat")
    return Buyer(
        name=customer.get("name") or stripe_invoice.get("customer_name") or None,
        email=customer.get("email") or stripe_invoice.get("customer_email") or fallback_email,
        address=address,
        vat_number=vat_number,
        identity=_identity(raw_address, tax_ids, vat_number),
    )


def vat_mentions(
    categories: set[str], seller_vat_number: str | None, buyer_vat_number: str | None
) -> list[str]:
    """The VAT mentions a document's lines call for: reverse charge names both VAT
    numbers (art. 242 nonies A, 13° of annex II to the CGI)."""
    if "AE" not in categories:
        return []
    return [
        f"{REVERSE_CHARGE_MENTION} — TVA due par le preneur (art. 283-2 du CGI, art. 196 de "
        f"la directive 2006/112/CE). N° TVA du vendeur : {seller_vat_number or '—'} ; "
        f"N° TVA du client : {buyer_vat_number or '—'}"
    ]
