"""Seals: the SHA-256 of each issued document's PDF and XML, chained per series.

A document is sealed once its files are written, in number order within its series (``FACT``,
``AVOIR``): its chain hash covers its number, issue time, amounts, both file hashes and the
chain hash of the document numbered before it, so changing, removing or inserting any
document or file breaks every hash after it. Seal rows are insert-only (database triggers).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.config import Settings
from meterbill.db import Database, insert_for, utcnow
from meterbill.invoicing.documents import CREDIT_NOTE_SERIES, INVOICE_SERIES, lock_series
from meterbill.invoicing.models import DocumentSeal, Invoice
from meterbill.invoicing.pdf import ensure_pdf, pdf_file, xml_file

log = logging.getLogger("meterbill.invoicing")
SERIES_OF_KIND = {"invoice": INVOICE_SERIES, "credit_note": CREDIT_NOTE_SERIES}


def file_sha256(path: Path) -> str | None:
    """The file's SHA-256, or None when it is missing."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def chain_hash(
    document: Invoice, pdf_sha256: str, xml_sha256: str, previous_hash: str | None
) -> str:
    """The hash linking a document to the one numbered before it in its series."""
    fields = [
        document.invoice_number,
        document.issued_at.isoformat(),
        str(document.amount_ht),
        str(document.amount_tva),
        str(document.amount),
        document.currency,
        pdf_sha256,
        xml_sha256,
        previous_hash or "",
    ]
    return hashlib.sha256("|".join(fields).encode()).hexdigest()


def _next_unsealed(session: Session, kind: str) -> Invoice | None:
    return session.scalars(
        select(Invoice)
        .outerjoin(DocumentSeal, DocumentSeal.invoice_id == Invoice.id)
        .where(Invoice.kind == kind, DocumentSeal.invoice_id.is_(None))
        .order_by(Invoice.id)
        .limit(1)
    ).first()


def _seal(db: Database, settings: Settings, document: Invoice) -> bool:
    """Seal one document (its files written first); False when another sealer did."""
    ensure_pdf(db, settings, document.invoice_number)
    pdf_sha = file_sha256(pdf_file(settings, document))
    xml_sha = file_sha256(xml_file(settings, document))
    if pdf_sha is None or xml_sha is None:
        raise FileNotFoundError(f"{document.invoice_number}: files vanished while sealing")
    series = SERIES_OF_KIND[document.kind]
    with db.transaction() as session:
        lock_series(session, f"seal:{series}")
        if session.get(DocumentSeal, document.id) is not None:
            return False
        previous = session.scalars(
            select(DocumentSeal.chain_hash)
            .join(Invoice, Invoice.id == DocumentSeal.invoice_id)
            .where(Invoice.kind == document.kind, Invoice.id < document.id)
            .order_by(Invoice.id.desc())
            .limit(1)
        ).first()
        session.execute(
            insert_for(session)(DocumentSeal)
            .values(
                invoice_id=document.id,
                series=series,
                pdf_sha256=pdf_sha,
                xml_sha256=xml_sha,
                previous_hash=previous,
                chain_hash=chain_hash(document, pdf_sha, xml_sha, previous),
                sealed_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["invoice_id"])
        )
    return True


def seal_documents(db: Database, settings: Settings, limit: int = 1000) -> int:
    """Seal the unsealed documents of every series, oldest first; how many were sealed."""
    sealed = 0
    for kind in SERIES_OF_KIND:
        for _ in range(limit):
            with db.reading() as session:
                document = _next_unsealed(session, kind)
            if document is None:
                break
            if _seal(db, settings, document):
                sealed += 1
    return sealed


def render_and_seal(db: Database, settings: Settings, number: str) -> int:
    """Render a newly issued document's files, then seal whatever is ready in number order
    (the `invoice.render` job); how many documents were sealed."""
    ensure_pdf(db, settings, number)
    return seal_documents(db, settings)
