"""Response bodies of the invoice endpoints. Amounts are integer cents."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class InvoiceSummary(BaseModel):
    number: str
    kind: str  # invoice | credit_note
    status: str
    issued_at: datetime
    currency: str
    amount_ht: int
    amount_tva: int
    amount_ttc: int
    credited_invoice: str | None = None
    pdf_url: str  # the Factur-X PDF
    einvoice_profile: str = "factur-x:en16931"  # the e-invoice the PDF carries
    xml_url: str | None = None  # the same as CII (?format=cii) or UBL (?format=ubl)


class InvoicePage(BaseModel):
    items: list[InvoiceSummary]
    page: int
    per_page: int
    total: int
    has_more: bool


class LineOut(BaseModel):
    description: str
    quantity: int
    unit_price_ht: str  # cents, decimal string
    vat_rate_bp: int
    amount_ht: int
    amount_tva: int
    amount_ttc: int
    period_start: datetime | None = None
    period_end: datetime | None = None
    vat_category: str = "S"  # EN 16931: S standard, Z zero, E exempt, AE reverse charge


class SellerOut(BaseModel):
    name: str = ""
    address: list[str] = []
    email: str = ""
    siren: str = ""
    siret: str = ""
    vat_number: str = ""
    legal_form: str = ""
    rcs: str = ""
    vat_exempt: bool = False
    mentions: list[str] = []


class BuyerOut(BaseModel):
    name: str | None = None
    email: str | None = None
    address: list[str] = []
    vat_number: str | None = None
    siren: str | None = None
    country: str | None = None
    business: bool = False  # a company identity (SIREN or VAT number): a B2B sale


class BalanceOut(BaseModel):
    """Derived from the ledger (`transactions`)."""

    total: int
    paid: int
    refunded: int
    net_paid: int
    credited: int
    due: int
    status: str


class InvoiceOut(InvoiceSummary):
    period: str
    paid_at: datetime | None = None
    service_start: datetime | None = None
    service_end: datetime | None = None
    stripe_invoice_id: str | None = None
    seller: SellerOut
    buyer: BuyerOut
    lines: list[LineOut]
    credit_notes: list[str] = []
    balance: BalanceOut | None = None  # invoices only
    vat_mentions: list[str] = []  # e.g. "Autoliquidation …" with both VAT numbers
