"""A document's e-invoice XML, CII or UBL, built from its frozen rows."""

from __future__ import annotations

from typing import Literal

from meterbill.config import Settings
from meterbill.db import Database
from meterbill.invoicing.einvoice.cii import build_cii
from meterbill.invoicing.einvoice.document import EDocument, build_edocument
from meterbill.invoicing.einvoice.rules import ensure_business_rules
from meterbill.invoicing.einvoice.ubl import build_ubl
from meterbill.invoicing.ledger import find_document, lines_of
from meterbill.invoicing.models import Invoice

XmlFormat = Literal["cii", "ubl"]


def load_edocument(
    db: Database, settings: Settings, number: str, user_id: str | None = None
) -> EDocument:
    """The EN 16931 view of the document `number` (the user's own). Raises InvoiceNotFound."""
    with db.reading() as session:
        document = find_document(session, number, user_id)
        lines = lines_of(session, document)
        credited = (
            session.get(Invoice, document.credited_invoice_id)
            if document.credited_invoice_id
            else None
        )
        return build_edocument(
            document,
            lines,
            credited,
            zone=settings.seller_timezone,
            seller_country=settings.seller_country,
        )


def document_xml(
    db: Database, settings: Settings, number: str, user_id: str | None, fmt: XmlFormat
) -> bytes:
    """The document as CII (what its Factur-X PDF embeds) or UBL, business rules checked."""
    edocument = load_edocument(db, settings, number, user_id)
    ensure_business_rules(edocument)
    return build_cii(edocument) if fmt == "cii" else build_ubl(edocument)
