"""`meterbill invoices audit`: proof that the books were never touched.

For every series: no gap in the numbers of a month (and none taken and lost), issue dates
never going backwards as numbers rise, every stored PDF and XML matching its seal, an
unbroken chain of seals, totals equal to their lines, and each invoice's balance equal to
its ledger entries. Each problem names the document's number."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from meterbill.config import Settings
from meterbill.db import Database
from meterbill.invoicing.einvoice.document import build_edocument
from meterbill.invoicing.einvoice.rules import check_business_rules
from meterbill.invoicing.models import (
    AuditRun,
    DocumentSeal,
    DocumentSequence,
    Invoice,
    InvoiceLine,
    Transaction,
)
from meterbill.invoicing.pdf import pdf_file, xml_file
from meterbill.invoicing.seals import SERIES_OF_KIND, chain_hash, file_sha256

_NUMBER = re.compile(r"^([A-Z]+)-(\d{6})-(\d+)$")


@dataclass(frozen=True)
class Problem:
    number: str
    check: str  # gap | date | file | chain | totals | ledger | seal | en16931
    message: str


@dataclass
class AuditReport:
    documents: int = 0
    problems: list[Problem] = field(default_factory=list)

    def add(self, number: str, check: str, message: str) -> None:
        self.problems.append(Problem(number, check, message))


def _key(number: str) -> tuple[str, str, int]:
    match = _NUMBER.match(number)
    if not match:
        return ("", "", 0)
    return match.group(1), match.group(2), int(match.group(3))


def _gaps(session: Session, documents: list[Invoice], report: AuditReport) -> None:
    taken: dict[tuple[str, str], list[int]] = defaultdict(list)
    for document in documents:
        series, period, sequence = _key(document.invoice_number)
        if not series:
            report.add(document.invoice_number, "gap", "number is not SERIES-YYYYMM-NNNN")
            continue
        taken[(series, period)].append(sequence)
    counters = {
        (row.series, row.period): row.last_number
        for row in session.scalars(select(DocumentSequence))
    }
    for series, period in sorted(set(taken) | set(counters)):
        sequences = taken.get((series, period), [])
        last = max([counters.get((series, period), 0), *sequences])
        for missing in sorted(set(range(1, last + 1)) - set(sequences)):
            report.add(f"{series}-{period}-{missing:04d}", "gap", "number missing from the series")


def _dates(documents: list[Invoice], report: AuditReport) -> None:
    latest: dict[str, tuple[datetime, str]] = {}
    for document in sorted(documents, key=lambda d: _key(d.invoice_number)):
        series = _key(document.invoice_number)[0]
        before = latest.get(series)
        if before and document.issued_at < before[0]:
            report.add(
                document.invoice_number, "date", f"issued before {before[1]}, numbered earlier"
            )
        latest[series] = (document.issued_at, document.invoice_number)


def _seals(
    settings: Settings,
    documents: list[Invoice],
    seals: dict[int, DocumentSeal],
    report: AuditReport,
) -> None:
    for kind in SERIES_OF_KIND:
        previous: str | None = None
        for document in sorted((d for d in documents if d.kind == kind), key=lambda d: d.id):
            seal = seals.get(document.id)
            number = document.invoice_number
            if seal is None:
                report.add(number, "seal", "not sealed (its files were never hashed)")
                previous = None
                continue
            for label, path, stored in (
                ("PDF", pdf_file(settings, document), seal.pdf_sha256),
                ("XML", xml_file(settings, document), seal.xml_sha256),
            ):
                actual = file_sha256(path)
                if actual is None:
                    report.add(number, "file", f"{label} file missing: {path}")
                elif actual != stored:
                    report.add(number, "file", f"{label} file does not match its SHA-256")
            if seal.previous_hash != previous:
                report.add(number, "chain", "does not follow the previous document's hash")
            expected = chain_hash(document, seal.pdf_sha256, seal.xml_sha256, seal.previous_hash)
            if seal.chain_hash != expected:
                report.add(number, "chain", "its data no longer match its chain hash")
            previous = seal.chain_hash


def _totals(session: Session, documents: list[Invoice], report: AuditReport) -> None:
    sums = {
        invoice_id: (ht, tva, ttc)
        for invoice_id, ht, tva, ttc in session.execute(
            select(
                InvoiceLine.invoice_id,
                func.sum(InvoiceLine.amount_ht),
                func.sum(InvoiceLine.amount_tva),
                func.sum(InvoiceLine.amount_ttc),
            ).group_by(InvoiceLine.invoice_id)
        ).tuples()
    }
    for document in documents:
        ht, tva, ttc = (int(v or 0) for v in sums.get(document.id, (0, 0, 0)))
        if (ht, tva, ttc) != (document.amount_ht, document.amount_tva, document.amount):
            report.add(document.invoice_number, "totals", "totals differ from the sum of lines")
        elif ht + tva != ttc:
            report.add(document.invoice_number, "totals", "HT + TVA differs from TTC")


def _ledger(session: Session, documents: list[Invoice], report: AuditReport) -> None:
    moved: dict[tuple[int | None, str], int] = {
        (invoice_id, kind): int(amount or 0)
        for invoice_id, kind, amount in session.execute(
            select(Transaction.invoice_id, Transaction.type, func.sum(Transaction.amount))
            .where(Transaction.invoice_id.is_not(None))
            .group_by(Transaction.invoice_id, Transaction.type)
        ).tuples()
    }
    credited: dict[int, int] = defaultdict(int)
    for document in documents:
        if document.credited_invoice_id:
            credited[document.credited_invoice_id] += -document.amount
    for document in documents:
        if document.kind != "invoice":
            continue
        paid = moved.get((document.id, "payment"), 0)
        refunded = -moved.get((document.id, "refund"), 0)
        if paid != document.amount:
            report.add(
                document.invoice_number,
                "ledger",
                f"invoiced {document.amount} but the ledger holds payments of {paid}",
            )
        if refunded != credited[document.id]:
            report.add(
                document.invoice_number,
                "ledger",
                f"refunded {refunded} but credit notes give back {credited[document.id]}",
            )


def _rules(
    session: Session, settings: Settings, documents: list[Invoice], report: AuditReport
) -> None:
    by_id = {document.id: document for document in documents}
    lines: dict[int, list[InvoiceLine]] = defaultdict(list)
    for line in session.scalars(select(InvoiceLine).order_by(InvoiceLine.position)):
        lines[line.invoice_id].append(line)
    for document in documents:
        credited = by_id.get(document.credited_invoice_id or 0)
        edocument = build_edocument(
            document,
            lines[document.id],
            credited,
            zone=settings.seller_timezone,
            seller_country=settings.seller_country,
        )
        for violation in check_business_rules(edocument):
            report.add(document.invoice_number, "en16931", str(violation))


def audit_books(session: Session, settings: Settings) -> AuditReport:
    """Check every document of every series; the problems found, each with its number."""
    documents = list(session.scalars(select(Invoice).order_by(Invoice.id)))
    seals = {seal.invoice_id: seal for seal in session.scalars(select(DocumentSeal))}
    report = AuditReport(documents=len(documents))
    _gaps(session, documents, report)
    _dates(documents, report)
    _seals(settings, documents, seals, report)
    _totals(session, documents, report)
    _ledger(session, documents, report)
    _rules(session, settings, documents, report)
    return report


def record_audit(db: Database, report: AuditReport, now: datetime) -> None:
    """Keep the run's result, shown in `/readyz` details."""
    with db.transaction() as session:
        session.add(
            AuditRun(
                ran_at=now,
                documents=report.documents,
                problems=len(report.problems),
                report=json.dumps([asdict(p) for p in report.problems[:1000]]),
            )
        )


def last_audit(session: Session) -> dict[str, Any] | None:
    run = session.scalars(select(AuditRun).order_by(AuditRun.id.desc()).limit(1)).first()
    if run is None:
        return None
    return {
        "ran_at": run.ran_at.isoformat(),
        "documents": run.documents,
        "problems": run.problems,
        "ok": run.problems == 0,
    }
