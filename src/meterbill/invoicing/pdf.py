"""PDFs of invoices and credit notes: an HTML template in French, rendered by WeasyPrint
(in a child process, see invoicing.renderer).

A document's `pdf_path` is fixed when it is issued; the file is written by the worker (the
`invoice.render` job enqueued with the document, see invoicing.seals) or, failing that, on
the first download. A missing file is simply rendered again: every input is frozen on the
document's rows.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from meterbill.config import Settings
from meterbill.db import Database
from meterbill.invoicing.einvoice.cii import build_cii
from meterbill.invoicing.einvoice.document import EDocument, build_edocument, local_date
from meterbill.invoicing.einvoice.facturx import embed_facturx
from meterbill.invoicing.einvoice.rules import check_business_rules
from meterbill.invoicing.ledger import find_document, lines_of, seller_of
from meterbill.invoicing.models import Invoice, InvoiceLine
from meterbill.invoicing.parties import vat_mentions
from meterbill.invoicing.renderer import DOCUMENTS_PER_CHILD, RENDER_TIMEOUT_SECONDS, html_to_pdf

log = logging.getLogger("meterbill.invoicing")
_environment = Environment(
    loader=PackageLoader("meterbill.invoicing", "templates"),
    autoescape=select_autoescape(["html"]),
)
_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "CHF": "CHF"}


def format_money(cents: int, currency: str) -> str:
    """French notation: ``1 234,56 €``, ``-10,80 €``."""
    sign = "-" if cents < 0 else ""
    units, rest = divmod(abs(cents), 100)
    grouped = f"{units:,}".replace(",", " ")
    return f"{sign}{grouped},{rest:02d} {_SYMBOLS.get(currency.upper(), currency.upper())}"


def format_unit_price(cents: str, currency: str) -> str:
    value = Decimal(cents) / 100
    text = f"{value:.2f}" if value == value.quantize(Decimal("0.01")) else f"{value.normalize():f}"
    whole, _, fraction = text.partition(".")
    sign = "-" if whole.startswith("-") else ""
    grouped = f"{int(whole.lstrip('-') or 0):,}".replace(",", " ")
    return f"{sign}{grouped},{fraction} {_SYMBOLS.get(currency.upper(), currency.upper())}"


def format_rate(basis_points: int) -> str:
    value = Decimal(basis_points) / 100
    return f"{value.normalize():f}".replace(".", ",") + " %"


def _date(value: datetime | None, zone: str = "Europe/Paris") -> str:
    """The day as the seller lives it (a payment at 23:30 UTC on 30 November is dated
    1 December in Paris)."""
    day = local_date(value, zone)
    return day.strftime("%d/%m/%Y") if day else ""


def _period(start: datetime | None, end: datetime | None, zone: str = "Europe/Paris") -> str:
    if start and end:
        return f"du {_date(start, zone)} au {_date(end, zone)}"
    return _date(start or end, zone)


def render_document_html(
    document: Invoice,
    lines: list[InvoiceLine],
    credited: Invoice | None = None,
    zone: str = "Europe/Paris",
) -> str:
    currency = document.currency
    vat: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for line in lines:
        vat[line.vat_rate_bp][0] += line.amount_ht
        vat[line.vat_rate_bp][1] += line.amount_tva
    context: dict[str, Any] = {
        "title": "Avoir" if document.kind == "credit_note" else "Facture",
        "doc": document,
        "seller": seller_of(document),
        "vat_mentions": vat_mentions(
            {line.vat_category for line in lines},
            seller_of(document).get("vat_number"),
            document.buyer_vat_number,
        ),
        "buyer_address": (document.buyer_address or "").splitlines(),
        "issued": _date(document.issued_at, zone),
        "paid": _date(document.paid_at or document.issued_at, zone),
        "service_period": _period(document.service_start, document.service_end, zone),
        "credited_number": credited.invoice_number if credited else None,
        "credited_issued": _date(credited.issued_at, zone) if credited else None,
        "lines": [
            {
                "description": line.description,
                "period": _period(line.period_start, line.period_end, zone),
                "quantity": f"{line.quantity:,}".replace(",", " "),
                "unit": format_unit_price(line.unit_price_ht, currency),
                "rate": format_rate(line.vat_rate_bp),
                "ht": format_money(line.amount_ht, currency),
                "ttc": format_money(line.amount_ttc, currency),
            }
            for line in lines
        ],
        "vat_rows": [
            {
                "rate": format_rate(rate),
                "ht": format_money(ht, currency),
                "tva": format_money(tva, currency),
            }
            for rate, (ht, tva) in sorted(vat.items())
        ],
        "total_ht": format_money(document.amount_ht, currency),
        "total_tva": format_money(document.amount_tva, currency),
        "total_ttc": format_money(document.amount, currency),
        "total_ttc_abs": format_money(abs(document.amount), currency),
    }
    return _environment.get_template("invoice.html").render(context)


def render_document_pdf(
    document: Invoice,
    lines: list[InvoiceLine],
    credited: Invoice | None = None,
    zone: str = "Europe/Paris",
    documents_per_child: int = DOCUMENTS_PER_CHILD,
    timeout_seconds: float = RENDER_TIMEOUT_SECONDS,
) -> bytes:
    """The printed document as a PDF/A-3b (what Factur-X embeds its XML into), rendered by
    WeasyPrint in a child process replaced every `documents_per_child` documents (see
    invoicing.renderer). Raises PdfRenderingFailed when that child died rendering it or
    took longer than `timeout_seconds`."""
    html = render_document_html(document, lines, credited, zone)
    return html_to_pdf(html, documents_per_child, timeout_seconds)


def render_facturx(
    settings: Settings, document: Invoice, lines: list[InvoiceLine], credited: Invoice | None
) -> tuple[bytes, bytes]:
    """The Factur-X PDF and its CII XML. A document that breaks the EN 16931 business
    rules (one issued before the seller's identity was required) keeps a plain PDF/A,
    and the audit names it."""
    edocument = _edocument(settings, document, lines, credited)
    xml = build_cii(edocument)
    pdf = render_document_pdf(
        document,
        lines,
        credited,
        settings.seller_timezone,
        settings.pdf_documents_per_child,
        settings.pdf_render_timeout_seconds,
    )
    violations = check_business_rules(edocument)
    if violations:
        log.error(
            "document breaks EN 16931 rules: PDF without its e-invoice",
            extra={"number": document.invoice_number, "rules": [str(v) for v in violations]},
        )
        return pdf, xml
    return embed_facturx(pdf, xml, edocument), xml


def _edocument(
    settings: Settings, document: Invoice, lines: list[InvoiceLine], credited: Invoice | None
) -> EDocument:
    return build_edocument(
        document,
        lines,
        credited,
        zone=settings.seller_timezone,
        seller_country=settings.seller_country,
    )


def _write_once(target: Path, content: bytes) -> None:
    """Write the file whole, once: readers never see half a file, and when two renderers
    race the first file stays (a reader streaming it never sees it replaced)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content)
        os.link(temporary, target)
    except FileExistsError:
        pass
    finally:
        Path(temporary).unlink(missing_ok=True)


def xml_file(settings: Settings, document: Invoice) -> Path:
    """The CII XML kept beside the PDF (the same document, for the audit's hashes)."""
    return pdf_file(settings, document).with_suffix(".xml")


def pdf_file(settings: Settings, document: Invoice) -> Path:
    relative = document.pdf_path or f"{document.invoice_number}.pdf"
    return Path(settings.invoice_dir) / relative


def ensure_pdf(db: Database, settings: Settings, number: str, user_id: str | None = None) -> Path:
    """The document's PDF file (and its XML beside it), rendered now if missing. Raises
    InvoiceNotFound."""
    with db.reading() as session:
        document = find_document(session, number, user_id)
        target, xml_target = pdf_file(settings, document), xml_file(settings, document)
        if target.is_file() and xml_target.is_file():
            return target
        lines = lines_of(session, document)
        credited = (
            session.get(Invoice, document.credited_invoice_id)
            if document.credited_invoice_id
            else None
        )
    if target.is_file():  # rendered before e-invoices: its XML alone is missing
        _write_once(xml_target, build_cii(_edocument(settings, document, lines, credited)))
        return target
    pdf, xml = render_facturx(settings, document, lines, credited)
    _write_once(xml_target, xml)
    _write_once(target, pdf)
    log.info("invoice pdf rendered", extra={"number": number, "path": str(target)})
    return target
