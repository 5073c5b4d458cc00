"""E-reporting data for one month: what a dematerialisation platform (PDP) transmits to
the tax administration for sales that are *not* domestic B2B e-invoices.

Domestic B2B sales travel as e-invoices (Factur-X). B2C sales and B2B sales to buyers
abroad are reported instead, aggregated per day, VAT rate and category (the
"transactions" data), together with the payments received for services (the "paiements"
data: VAT on services is due when paid). One CSV row per aggregate.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from decimal import Decimal
from typing import TextIO
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.config import Settings
from meterbill.errors import InvalidMonth
from meterbill.invoicing.ledger import documents_of_month
from meterbill.invoicing.models import Invoice, InvoiceLine

COLUMNS = [
    "flux",  # transactions | paiements
    "date",
    "categorie",  # B2C (consumers) | B2B_INTERNATIONAL (business buyers abroad)
    "devise",
    "taux_tva",
    "categorie_tva",  # S, Z, E, AE (EN 16931)
    "nb_documents",
    "montant_ht",
    "montant_tva",
    "montant_ttc",
]
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
Key = tuple[str, str, str, str, int, str]


def reported_category(document: Invoice, seller_country: str) -> str | None:
    """Why the sale is e-reported, or None for a domestic B2B sale (e-invoiced)."""
    identity = json.loads(document.buyer_identity or "{}")
    business = bool(identity.get("business") or document.buyer_vat_number)
    if not business:
        return "B2C"
    if str(identity.get("country") or seller_country) != seller_country:
        return "B2B_INTERNATIONAL"
    return None


def _decimal(cents: int) -> str:
    return f"{Decimal(cents) / 100:.2f}"


def write_ereporting_csv(session: Session, settings: Settings, month: str, out: TextIO) -> int:
    """Write the month's e-reporting aggregates as CSV; how many rows."""
    if not _MONTH.match(month):
        raise InvalidMonth()
    zone = ZoneInfo(settings.seller_timezone)
    totals: dict[Key, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for document in documents_of_month(session, month):
        category = reported_category(document, settings.seller_country)
        if category is None:
            continue
        lines = session.scalars(
            select(InvoiceLine).where(InvoiceLine.invoice_id == document.id)
        ).all()
        counted: set[Key] = set()
        for line in lines:
            for flux, moment in (
                ("transactions", document.issued_at),
                ("paiements", document.paid_at or document.issued_at),
            ):
                day = moment.astimezone(zone).strftime("%Y-%m-%d")
                key = (flux, day, category, document.currency, line.vat_rate_bp, line.vat_category)
                figures = totals[key]
                if key not in counted:
                    figures[0] += 1
                    counted.add(key)
                figures[1] += line.amount_ht
                figures[2] += line.amount_tva
                figures[3] += line.amount_ttc
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for (flux, day, category, currency, rate, vat_category), figures in sorted(totals.items()):
        writer.writerow(
            [
                flux,
                day,
                category,
                currency,
                f"{Decimal(rate) / 100:.2f}",
                vat_category,
                figures[0],
                _decimal(figures[1]),
                _decimal(figures[2]),
                _decimal(figures[3]),
            ]
        )
    return len(totals)
