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


@dataclass(frozen=True)
class Buyer:
    name: str | None
    email: str | None
    address: list[str] = field(default_factory=list)
    vat_number: str | None = None


def _address_lines(address: Any) -> list[str]:
    if not isinstance(address, dict):
        return []
    city = " ".join(str(address.get(k) or "").strip() for k in ("postal_code", "city")).strip()
    parts = [address.get("line1"), address.get("line2"), city, address.get("state")]
    country = address.get("country")
    if country and country != "FR":
        parts.append(country)
    return [str(part).strip() for part in parts if part and str(part).strip()]


def _vat_number(invoice: dict[str, Any]) -> str | None:
    for tax_id in invoice.get("customer_tax_ids") or []:
        if isinstance(tax_id, dict) and tax_id.get("type") == "eu_vat" and tax_id.get("value"):
            return str(tax_id["value"])
    return None


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
    address = _address_lines(customer.get("address")) or _address_lines(
        stripe_invoice.get("customer_address")
    )
    return Buyer(
        name=customer.get("name") or stripe_invoice.get("customer_name") or None,
        email=customer.get("email") or stripe_invoice.get("customer_email") or fallback_email,
        address=address,
        vat_number=_vat_number(stripe_invoice),
    )
