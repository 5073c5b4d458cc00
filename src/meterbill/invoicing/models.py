"""Invoices, the money ledger, and the gapless document number sequences."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from meterbill.db import Base, utcnow


class DocumentSequence(Base):
    """The last number issued in one series (``FACT``, ``AVOIR``) for one month."""

    __tablename__ = "document_sequences"

    series: Mapped[str] = mapped_column(String(16), primary_key=True)
    period: Mapped[str] = mapped_column(String(6), primary_key=True)  # YYYYMM
    last_number: Mapped[int] = mapped_column(default=0)


class Invoice(Base):
    """An issued invoice (or credit note); never changed once written.

    Credit notes carry negative amounts. The seller and the buyer are copied onto the row as
    they were at issue time, so re-rendering a lost PDF later prints the same document.
    Triggers from migration 0003 refuse any UPDATE or DELETE of an issued row.
    """

    __tablename__ = "invoices"

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_number: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="invoice")  # invoice | credit_note
    user_id: Mapped[str] = mapped_column(
        ForeignKey("saas_users.id", ondelete="RESTRICT"), index=True
    )
    period: Mapped[str] = mapped_column(String(7))  # YYYY-MM of the issue date
    amount: Mapped[int] = mapped_column(BigInteger)  # total, tax included, in cents
    amount_ht: Mapped[int] = mapped_column(BigInteger, default=0)  # before tax, cents
    amount_tva: Mapped[int] = mapped_column(BigInteger, default=0)  # VAT, cents
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default="paid")
    # Relative to METERBILL_INVOICE_DIR, fixed at issue; the file is rendered later.
    pdf_path: Mapped[str | None] = mapped_column(String(1024))
    stripe_invoice_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_refund_id: Mapped[str | None] = mapped_column(String(255), unique=True, index=True)
    credited_invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"))
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    paid_at: Mapped[datetime | None]
    service_start: Mapped[datetime | None]
    service_end: Mapped[datetime | None]
    seller: Mapped[str] = mapped_column(Text, default="{}")  # JSON snapshot of the seller
    buyer_name: Mapped[str | None] = mapped_column(String(255))
    buyer_email: Mapped[str | None] = mapped_column(String(320))
    buyer_address: Mapped[str | None] = mapped_column(Text)  # one line per address line
    buyer_vat_number: Mapped[str | None] = mapped_column(String(64))
    # JSON: country, postal code, city, street, SIREN/SIRET, tax ids, business (B2B).
    buyer_identity: Mapped[str] = mapped_column(Text, default="{}")


class InvoiceLine(Base):
    """One line of an invoice or credit note; amounts in cents, negative on credit notes."""

    __tablename__ = "invoice_lines"

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(
        ForeignKey("invoices.id", ondelete="RESTRICT"), index=True
    )
    position: Mapped[int]
    description: Mapped[str] = mapped_column(String(500))
    quantity: Mapped[int] = mapped_column(BigInteger)
    # Cents before tax, as a decimal string (Stripe's unit_amount_decimal can be "0.15").
    unit_price_ht: Mapped[str] = mapped_column(String(32))
    vat_rate_bp: Mapped[int]  # basis points: 2000 = 20 %
    amount_ht: Mapped[int] = mapped_column(BigInteger)
    amount_tva: Mapped[int] = mapped_column(BigInteger)
    amount_ttc: Mapped[int] = mapped_column(BigInteger)
    period_start: Mapped[datetime | None]
    period_end: Mapped[datetime | None]
    vat_category: Mapped[str] = mapped_column(String(2), default="S")  # S Z E AE (UNCL 5305)


class Transaction(Base):
    """One movement of money: a payment, a refund or a failed attempt."""

    __tablename__ = "transactions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(
        ForeignKey("saas_users.id", ondelete="RESTRICT"), index=True
    )
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"), index=True)
    type: Mapped[str] = mapped_column(String(16))  # payment | refund | failed_payment
    amount: Mapped[int] = mapped_column(BigInteger)  # cents; refunds are negative
    currency: Mapped[str] = mapped_column(String(3))
    stripe_payment_intent: Mapped[str | None] = mapped_column(String(255))
    stripe_object_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_event_id: Mapped[str | None] = mapped_column(String(255))
    stripe_invoice_id: Mapped[str | None] = mapped_column(String(255), index=True)
    stripe_charge_id: Mapped[str | None] = mapped_column(String(255), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PendingDocument(Base):
    """A paid invoice or a refund's credit note that waits for its number: it is not
    issued while the seller's identity French law requires is incomplete (see
    `parties.missing_seller_fields`), and is issued, in arrival order, once it is."""

    __tablename__ = "pending_documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # invoice | credit_note
    user_id: Mapped[str] = mapped_column(
        ForeignKey("saas_users.id", ondelete="RESTRICT"), index=True
    )
    stripe_invoice_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    refund_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    credited_invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"))
    amount: Mapped[int] = mapped_column(BigInteger)  # paid, or to credit, TTC cents
    payload: Mapped[str] = mapped_column(Text, default="{}")  # the Stripe invoice (JSON)
    buyer: Mapped[str] = mapped_column(Text, default="{}")  # the buyer when paid (JSON)
    event_id: Mapped[str | None] = mapped_column(String(255))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    issued_invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"))
    issued_at: Mapped[datetime | None]


class DocumentSeal(Base):
    """The fingerprints of an issued document: SHA-256 of its PDF and of its XML, and the
    chain hash linking it to the previous document of its series. Never changed."""

    __tablename__ = "document_seals"

    invoice_id: Mapped[int] = mapped_column(
        ForeignKey("invoices.id", ondelete="RESTRICT"), primary_key=True
    )
    series: Mapped[str] = mapped_column(String(16))
    pdf_sha256: Mapped[str] = mapped_column(String(64))
    xml_sha256: Mapped[str] = mapped_column(String(64))
    previous_hash: Mapped[str | None] = mapped_column(String(64))
    chain_hash: Mapped[str] = mapped_column(String(64), unique=True)
    sealed_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditRun(Base):
    """One run of `meterbill invoices audit`: when, how many problems, and the report."""

    __tablename__ = "audit_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    ran_at: Mapped[datetime] = mapped_column(default=utcnow)
    documents: Mapped[int] = mapped_column(default=0)
    problems: Mapped[int] = mapped_column(default=0)
    report: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of problems
