"""Writing a numbered document (invoice or credit note) with its lines, and the gapless
number sequences behind ``FACT-YYYYMM-XXXX`` and ``AVOIR-YYYYMM-XXXX``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from meterbill.db import insert_for
from meterbill.invoicing.amounts import LineDraft, totals_of
from meterbill.invoicing.models import DocumentSequence, Invoice, InvoiceLine
from meterbill.invoicing.parties import Buyer
from meterbill.jobs.queue import enqueue

DEFAULT_ZONE = "Europe/Paris"
INVOICE_SERIES = "FACT"
CREDIT_NOTE_SERIES = "AVOIR"
# The worker renders each document's PDF and XML and seals them (invoicing.seals); a
# render takes ~0.3-1 s of CPU, which must not be spent in the process answering webhooks.
RENDER_JOB = "invoice.render"


def issue_document_number(
    session: Session, series: str, when: datetime, zone: str = DEFAULT_ZONE
) -> str:
    """The next number of `series` for the month of `when` where the seller lives
    (`zone`): ``FACT-YYYYMM-0001`` onwards.

    The counter row is incremented in the caller's transaction and stays locked until it
    ends, so concurrent issuers queue, and a rollback gives the number back: no gap, no
    duplicate. Past 9999 the counter simply gets wider.
    """
    period = when.astimezone(ZoneInfo(zone)).strftime("%Y%m")
    insert = insert_for(session)
    statement = (
        insert(DocumentSequence)
        .values(series=series, period=period, last_number=1)
        .on_conflict_do_update(
            index_elements=["series", "period"],
            set_={"last_number": DocumentSequence.last_number + 1},
        )
        .returning(DocumentSequence.last_number)
    )
    number = session.execute(statement).scalar_one()
    return f"{series}-{period}-{number:04d}"


def pdf_relative_path(number: str, when: datetime) -> str:
    """Where a document's PDF lives under METERBILL_INVOICE_DIR; fixed at issue."""
    return f"{when:%Y}/{when:%m}/{number}.pdf"


def lock_series(session: Session, series: str) -> None:
    """Hold the series until the transaction ends: on PostgreSQL an advisory lock; on
    SQLite the transaction already holds the database's only write lock."""
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"meterbill:{series}".encode()).digest()[:8], "big")
        session.execute(select(func.pg_advisory_xact_lock(key - (1 << 63))))


def issue_time(session: Session, series: str, kind: str, now: datetime) -> datetime:
    """The issue time of the next document of `series`, taken under the series' lock:
    never earlier than the document numbered before it, so a later number never carries
    an earlier date (a request that began earlier may take its number later)."""
    lock_series(session, series)
    latest = session.scalar(
        select(Invoice.issued_at).where(Invoice.kind == kind).order_by(Invoice.id.desc()).limit(1)
    )
    return max(now, latest) if latest is not None else now


def write_document(
    session: Session,
    *,
    series: str,
    kind: str,
    user_id: str,
    currency: str,
    lines: Sequence[LineDraft],
    seller: dict[str, Any],
    buyer: Buyer,
    now: datetime,
    zone: str = DEFAULT_ZONE,
    **fields: Any,
) -> Invoice:
    """Take the next number and write the document with its lines, in the caller's
    transaction. Everything slow (Stripe calls) must be done before: the series and the
    number's counter row stay locked until the transaction ends. The issue date and the
    numbering month are those of the seller's time zone (`zone`). The PDF is left to the
    worker (`RENDER_JOB`, enqueued in the same transaction)."""
    now = issue_time(session, series, kind, now)
    number = issue_document_number(session, series, now, zone)
    local = now.astimezone(ZoneInfo(zone))
    totals = totals_of(lines)
    document = Invoice(
        invoice_number=number,
        kind=kind,
        user_id=user_id,
        period=local.strftime("%Y-%m"),
        amount=totals.ttc,
        amount_ht=totals.ht,
        amount_tva=totals.tva,
        currency=currency,
        pdf_path=pdf_relative_path(number, local),
        issued_at=now,
        seller=json.dumps(seller, ensure_ascii=False, sort_keys=True),
        buyer_name=buyer.name,
        buyer_email=buyer.email,
        buyer_address="\n".join(buyer.address) or None,
        buyer_vat_number=buyer.vat_number,
        buyer_identity=json.dumps(buyer.identity, ensure_ascii=False, sort_keys=True),
        **fields,
    )
    session.add(document)
    session.flush()
    for position, line in enumerate(lines, start=1):
        session.add(
            InvoiceLine(
                invoice_id=document.id,
                position=position,
                description=line.description,
                quantity=line.quantity,
                unit_price_ht=line.unit_price_ht,
                vat_rate_bp=line.vat_rate_bp,
                amount_ht=line.amount_ht,
                amount_tva=line.amount_tva,
                amount_ttc=line.amount_ttc,
                period_start=line.period_start,
                period_end=line.period_end,
                vat_category=line.vat_category,
            )
        )
    session.flush()
    enqueue(session, RENDER_JOB, {"invoice_number": number})
    return document
