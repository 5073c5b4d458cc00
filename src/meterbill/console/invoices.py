"""Invoices and credit notes: the filtered list, the accountant's CSV (the same writer as
`meterbill invoices export`), PDFs, and sending an invoice's email again."""

from __future__ import annotations

import io
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from starlette.responses import RedirectResponse, Response

from meterbill.admin.service import record
from meterbill.console.rendering import page
from meterbill.console.session import FormDep, OperatorDep, ServicesDep
from meterbill.errors import InvalidMonth, InvoiceNotFound
from meterbill.invoicing.export import write_month_csv
from meterbill.invoicing.ledger import find_document
from meterbill.invoicing.pdf import ensure_pdf
from meterbill.invoicing.reports import search_documents
from meterbill.notify.history import resend_invoice_email
from meterbill.usage.service import parse_month

router = APIRouter(prefix="/admin", include_in_schema=False)
InvoiceNumber = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
Month = Annotated[str | None, Query(max_length=7)]
Choice = Annotated[str | None, Query(max_length=32)]


def _month_or_none(month: str | None) -> str | None:
    if not month:
        return None
    parse_month(month)
    return month


@router.get("/invoices")
def invoices(
    request: Request,
    operator: OperatorDep,
    services: ServicesDep,
    month: Month = None,
    status: Choice = None,
    kind: Choice = None,
    page_number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
) -> Response:
    try:
        chosen = _month_or_none(month)
    except InvalidMonth:
        chosen, month = None, None
    with services.db.reading() as session:
        rows, more = search_documents(
            session, month=chosen, status=status, kind=kind, page=page_number
        )
    return page(
        request,
        "invoices.html",
        {
            "operator": operator,
            "section": "invoices",
            "documents": rows,
            "more": more,
            "page": page_number,
            "month": month or "",
            "status": status or "",
            "kind": kind or "",
            "notice": request.query_params.get("done"),
        },
    )


@router.get("/invoices/export.csv")
def export_csv(operator: OperatorDep, services: ServicesDep, month: Month = None) -> Response:
    chosen = _month_or_none(month) or services.now().strftime("%Y-%m")
    out = io.StringIO()
    with services.db.reading() as session:
        write_month_csv(session, chosen, out)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="invoices-{chosen}.csv"'},
    )


@router.get("/invoices/{number}/pdf")
async def invoice_pdf(
    number: InvoiceNumber, operator: OperatorDep, services: ServicesDep
) -> Response:
    try:
        path = await run_in_threadpool(ensure_pdf, services.db, services.settings, number)
    except InvoiceNotFound:
        return Response("No such invoice", status_code=404, media_type="text/plain")
    return FileResponse(path, media_type="application/pdf", filename=f"{number}.pdf")


@router.post("/invoices/{number}/resend")
def resend(
    number: InvoiceNumber, operator: OperatorDep, form: FormDep, services: ServicesDep
) -> Response:
    """Queue the invoice's email again; written to the audit log."""
    now = services.now()
    back = form.get("back")
    try:
        with services.db.transaction() as session:
            document = find_document(session, number)
            resend_invoice_email(session, document, now)
            record(session, operator.email, "invoice.resend_email", document.user_id, number, now)
        outcome = "email-queued"
    except InvoiceNotFound:
        outcome = "no-invoice"
    target = back if isinstance(back, str) and back.startswith("/admin/") else "/admin/invoices"
    return RedirectResponse(f"{target}?done={outcome}", status_code=303)
