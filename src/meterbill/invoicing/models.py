"""Invoices, the money ledger, and the gapless document number sequences."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from meterbill.db import Base, utcnow


class DocumentSequence(Base):
    """The last number issued in one series (``FACT``, ``AVOIR``) for one month."""

    __tablename__ = "document_sequences"

    series: Mapped[str] = mapped_column(String(16), primary_key=True)
    period: Mapped[str] = mapped_column(String(6), primary_key=True)  # YYYYMM
    last_number: Mapped[int] = mapped_column(default=0)


class Invoice(Base):
    """An issued invoice (or credit note); never changed once written."""

    __tablename__ = "invoices"

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_number: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="invoice")  # invoice | credit_note
    user_id: Mapped[str] = mapped_column(
        ForeignKey("saas_users.id", ondelete="RESTRICT"), index=True
    )
    period: Mapped[str] = mapped_column(String(7))  # YYYY-MM of the issue date
    amount: Mapped[int] = mapped_column(BigInteger)  # total, tax included, in cents
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default="paid")
    pdf_path: Mapped[str | None] = mapped_column(String(1024))
    stripe_invoice_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    credited_invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"))
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)


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
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
