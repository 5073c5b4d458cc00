"""The FEC (Fichier des écritures comptables, art. A47 A-1 of the LPF) of one year: the
18 columns, tab-separated, named ``{SIREN}FEC{YYYYMMDD}.txt`` (the closing date).

- Sales journal: each invoice debits the customer (411) with its total and credits revenue
  (706) with its amount before tax and VAT collected (44571) once per rate; a credit note
  is the mirror entry.
- Bank journal: each payment debits the bank (512) and credits the customer; a refund the
  reverse.

Every entry balances (debits = credits). Accounts and journal codes come from settings.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import TextIO
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.config import Settings
from meterbill.invoicing.models import Invoice, InvoiceLine, Transaction

COLUMNS = [
    "JournalCode",
    "JournalLib",
    "EcritureNum",
    "EcritureDate",
    "CompteNum",
    "CompteLib",
    "CompAuxNum",
    "CompAuxLib",
    "PieceRef",
    "PieceDate",
    "EcritureLib",
    "Debit",
    "Credit",
    "EcritureLet",
    "DateLet",
    "ValidDate",
    "Montantdevise",
    "Idevise",
]


@dataclass(frozen=True)
class Posting:
    account: str
    label: str
    amount: int  # cents: positive is a debit, negative a credit
    customer: str | None = None


@dataclass(frozen=True)
class Entry:
    journal: str
    journal_label: str
    day: date
    piece: str
    label: str
    postings: list[Posting]


def fec_filename(siren: str, year: int) -> str:
    return f"{siren}FEC{year}1231.txt"


def _amount(cents: int) -> str:
    return f"{Decimal(cents) / 100:.2f}".replace(".", ",")


def _clean(text: str | None) -> str:
    return " ".join((text or "").replace("\t", " ").split())


def _in_year(moment: datetime, year: int, zone: ZoneInfo) -> date | None:
    day = moment.astimezone(zone).date()
    return day if day.year == year else None


def _sale(settings: Settings, document: Invoice, lines: list[InvoiceLine], day: date) -> Entry:
    credit = document.kind == "credit_note"
    customer = document.user_id
    name = _clean(document.buyer_name or document.buyer_email or customer)
    ht: dict[int, int] = defaultdict(int)
    tva: dict[int, int] = defaultdict(int)
    for line in lines:
        ht[line.vat_rate_bp] += line.amount_ht
        tva[line.vat_rate_bp] += line.amount_tva
    label = f"{'Avoir' if credit else 'Facture'} {document.invoice_number} {name}"
    postings = [Posting(settings.fec_account_customers, "Clients", document.amount, customer)]
    for rate in sorted(ht):
        postings.append(Posting(settings.fec_account_revenue, "Prestations de services", -ht[rate]))
        if tva[rate]:
            postings.append(
                Posting(settings.fec_account_vat, f"TVA collectée {rate / 100:g} %", -tva[rate])
            )
    return Entry(
        settings.fec_journal_sales, "Ventes", day, document.invoice_number, label, postings
    )


def _bank(settings: Settings, row: Transaction, piece: str, day: date) -> Entry:
    refund = row.type == "refund"
    label = f"{'Remboursement' if refund else 'Paiement'} Stripe {piece}"
    postings = [
        Posting(settings.fec_account_bank, "Banque", row.amount),
        Posting(settings.fec_account_customers, "Clients", -row.amount, row.user_id),
    ]
    return Entry(settings.fec_journal_bank, "Banque", day, piece, label, postings)


def fec_entries(session: Session, settings: Settings, year: int) -> Iterator[Entry]:
    """The year's entries, sales first then bank, each in date order."""
    zone = ZoneInfo(settings.seller_timezone)
    documents = session.scalars(
        select(Invoice).where(Invoice.period.like(f"{year}-%")).order_by(Invoice.id)
    ).all()
    lines: dict[int, list[InvoiceLine]] = defaultdict(list)
    for line in session.scalars(
        select(InvoiceLine)
        .where(InvoiceLine.invoice_id.in_([d.id for d in documents]))
        .order_by(InvoiceLine.invoice_id, InvoiceLine.position)
    ):
        lines[line.invoice_id].append(line)
    for document in sorted(documents, key=lambda d: d.issued_at):
        day = document.issued_at.astimezone(zone).date()
        yield _sale(settings, document, lines[document.id], day)
    numbers = dict(session.execute(select(Invoice.id, Invoice.invoice_number)).tuples().all())
    movements = session.scalars(
        select(Transaction)
        .where(Transaction.type.in_(("payment", "refund")), Transaction.amount != 0)
        .order_by(Transaction.created_at, Transaction.id)
    ).all()
    for row in movements:
        paid_on = _in_year(row.created_at, year, zone)
        if paid_on is None:
            continue
        piece = numbers.get(row.invoice_id or 0) or row.stripe_invoice_id or str(row.id)
        yield _bank(settings, row, piece, paid_on)


def write_fec(session: Session, settings: Settings, year: int, out: TextIO) -> int:
    """Write the year's FEC to `out`; how many entries."""
    out.write("\t".join(COLUMNS) + "\n")
    count = 0
    sequence: dict[str, int] = defaultdict(int)
    for entry in fec_entries(session, settings, year):
        if sum(p.amount for p in entry.postings) != 0:  # never write an unbalanced entry
            raise ValueError(f"unbalanced entry for {entry.piece}")
        sequence[entry.journal] += 1
        number = f"{entry.journal}{year}{sequence[entry.journal]:06d}"
        day = entry.day.strftime("%Y%m%d")
        for posting in entry.postings:
            if posting.amount == 0:
                continue
            row = [
                entry.journal,
                entry.journal_label,
                number,
                day,
                posting.account,
                posting.label,
                posting.customer or "",
                _clean(posting.customer) if posting.customer else "",
                _clean(entry.piece),
                day,
                _clean(entry.label),
                _amount(max(posting.amount, 0)),
                _amount(max(-posting.amount, 0)),
                "",
                "",
                day,
                "",
                "",
            ]
            out.write("\t".join(row) + "\n")
        count += 1
    return count
