"""HTTP endpoints of invoicing: the user's own invoices and credit notes, JSON and PDF."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse, Response
from sqlalchemy.orm import Session

from meterbill.auth.dependencies import CurrentUser, ServicesDep
from meterbill.errors import InvoiceNotFound, PdfRenderingFailed
from meterbill.invoicing import ledger
from meterbill.invoicing.einvoice import PROFILE
from meterbill.invoicing.einvoice.service import XmlFormat, document_xml
from meterbill.invoicing.models import Invoice
from meterbill.invoicing.parties import vat_mentions
from meterbill.invoicing.pdf import ensure_pdf
from meterbill.invoicing.schemas import (
    BalanceOut,
    BuyerOut,
    InvoiceOut,
    InvoicePage,
    InvoiceSummary,
    LineOut,
    SellerOut,
)
from meterbill.openapi import raises

router = APIRouter(prefix="/api/v1/billing/invoices", tags=["invoices"])


def _summary(session: Session, document: Invoice) -> dict[str, object]:
    return {
        "number": document.invoice_number,
        "kind": document.kind,
        "status": document.status,
        "issued_at": document.issued_at,
        "currency": document.currency,
        "amount_ht": document.amount_ht,
        "amount_tva": document.amount_tva,
        "amount_ttc": document.amount,
        "credited_invoice": ledger.number_of(session, document.credited_invoice_id),
        "pdf_url": f"{router.prefix}/{document.invoice_number}/pdf",
        "einvoice_profile": PROFILE,
        "xml_url": f"{router.prefix}/{document.invoice_number}/xml?format=cii",
    }


# Document numbers are `FACT-…` / `AVOIR-…`; anything else cannot name one.
InvoiceNumber = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9-]+$")]


@router.get("", response_model=InvoicePage)
def list_invoices(
    user: CurrentUser,
    services: ServicesDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 20,
) -> InvoicePage:
    """The user's invoices and credit notes, newest first."""
    with services.db.reading() as session:
        documents, total = ledger.list_documents(session, user.user_id, page, per_page)
        items = [InvoiceSummary.model_validate(_summary(session, d)) for d in documents]
    return InvoicePage(
        items=items, page=page, per_page=per_page, total=total, has_more=page * per_page < total
    )


@router.get("/{number}", response_model=InvoiceOut)
@raises(InvoiceNotFound)
def get_invoice(number: InvoiceNumber, user: CurrentUser, services: ServicesDep) -> InvoiceOut:
    """One invoice or credit note with its lines, seller, buyer and ledger balance."""
    with services.db.reading() as session:
        document = ledger.find_document(session, number, user.user_id)
        balance = None
        lines = ledger.lines_of(session, document)
        seller = ledger.seller_of(document)
        identity = json.loads(document.buyer_identity or "{}")
        if document.kind == "invoice":
            figures = ledger.invoice_balance(session, document)
            balance = BalanceOut.model_validate(figures, from_attributes=True)
        return InvoiceOut.model_validate(
            {
                **_summary(session, document),
                "period": document.period,
                "paid_at": document.paid_at,
                "service_start": document.service_start,
                "service_end": document.service_end,
                "stripe_invoice_id": document.stripe_invoice_id,
                "seller": SellerOut.model_validate(seller),
                "buyer": BuyerOut(
                    name=document.buyer_name,
                    email=document.buyer_email,
                    address=(document.buyer_address or "").splitlines(),
                    vat_number=document.buyer_vat_number,
                    siren=identity.get("siren"),
                    country=identity.get("country"),
                    business=bool(identity.get("business") or document.buyer_vat_number),
                ),
                "lines": [LineOut.model_validate(line, from_attributes=True) for line in lines],
                "credit_notes": ledger.credit_note_numbers(session, document),
                "balance": balance,
                "vat_mentions": vat_mentions(
                    {line.vat_category for line in lines},
                    seller.get("vat_number"),
                    document.buyer_vat_number,
                ),
            }
        )


@router.get(
    "/{number}/pdf",
    response_class=FileResponse,
    responses={200: {"content": {"application/pdf": {}}}},
)
@raises(InvoiceNotFound, PdfRenderingFailed)
def get_invoice_pdf(
    number: InvoiceNumber, user: CurrentUser, services: ServicesDep
) -> FileResponse:
    """The document as its Factur-X PDF (PDF/A-3 with the CII XML embedded; rendered now
    if it was never rendered or has gone missing)."""
    path = ensure_pdf(services.db, services.settings, number, user.user_id)
    return FileResponse(path, media_type="application/pdf", filename=f"{number}.pdf")


@router.get(
    "/{number}/xml",
    response_class=Response,
    responses={200: {"content": {"application/xml": {}}}},
)
@raises(InvoiceNotFound)
def get_invoice_xml(
    number: InvoiceNumber,
    user: CurrentUser,
    services: ServicesDep,
    format: Annotated[XmlFormat, Query(description="cii (Factur-X's XML) or ubl")] = "cii",
) -> Response:
    """The document as EN 16931 XML: UN/CEFACT CII (the XML its Factur-X PDF embeds) or
    OASIS UBL 2.1."""
    xml = document_xml(services.db, services.settings, number, user.user_id, format)
    filename = f"{number}.{'cii' if format == 'cii' else 'ubl'}.xml"
    return Response(
        xml,
        media_type="application/xml",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
