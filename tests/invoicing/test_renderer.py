"""PDFs are rendered in a child process replaced every N documents (WeasyPrint keeps memory
per document for the life of its process): downloads through the API, whose process never
imports WeasyPrint, still serve valid PDF/A-3 Factur-X files. A child killed while idle
costs no error; one that dies or runs out of time during a render costs that download a
503; one left idle exits."""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from pypdf import PdfReader

from meterbill.invoicing.pdf import pdf_file, xml_file
from meterbill.invoicing.renderer import html_to_pdf
from tests import stripe_events as se
from tests.conftest import Service
from tests.invoicing.helpers import customer_of, documents, posted
from tests.jobs.conftest import wait_for


def _issue_invoice_and_credit_note(service: Service) -> list[str]:
    customer = customer_of(service)
    paid = se.invoice("in_child", customer, "sub_child", amount=1080, payment_intent="pi_child")
    posted(service, se.event("invoice.paid", paid))
    refund = se.charge_refunded(customer, "pi_child", 1080, [("re_child", 300)])
    posted(service, se.event("charge.refunded", refund))
    return [document.invoice_number for document in documents(service)]


def _download_fresh(service: Service, number: str) -> httpx.Response:
    """GET the document's PDF after removing its files, so that it is rendered again."""
    [document] = [d for d in documents(service) if d.invoice_number == number]
    pdf_file(service.settings, document).unlink(missing_ok=True)
    xml_file(service.settings, document).unlink(missing_ok=True)
    return service.client.get(f"/api/v1/billing/invoices/{number}/pdf", headers=service.auth())


def _assert_factur_x_pdf_a3(content: bytes) -> None:
    root = PdfReader(io.BytesIO(content)).trailer["/Root"]
    xmp = root["/Metadata"].get_object().get_data().decode()
    assert "<pdfaid:part>3</pdfaid:part>" in xmp and "<pdfaid:conformance>B" in xmp
    assert root["/OutputIntents"]  # PDF/A's colour profile
    assert root["/Names"]["/EmbeddedFiles"]["/Names"][0] == "factur-x.xml"


def _issue_long_invoice(service: Service, lines: int = 1500) -> str:
    """An invoice of `lines` lines: WeasyPrint takes about 15 s over its 40 pages."""
    paid = se.invoice("in_long", customer_of(service), "sub_long", amount=lines)
    line = paid["lines"]["data"][0]
    pricing = {**line["pricing"], "unit_amount_decimal": "1"}
    paid["lines"]["data"] = [
        {**line, "id": f"il_long_{n}", "amount": 1, "pricing": pricing} for n in range(lines)
    ]
    posted(service, se.event("invoice.paid", paid))
    return documents(service)[-1].invoice_number


def _assert_a_new_child_renders(service: Service, number: str, dead: int) -> None:
    """The document downloads as a PDF/A-3, rendered by a child other than `dead`."""
    response = _download_fresh(service, number)
    assert response.status_code == 200, response.text
    _assert_factur_x_pdf_a3(response.content)
    [replacement] = _render_children()
    assert replacement != dead


def _render_children() -> list[int]:
    return [child.pid for child in multiprocessing.active_children()]


def _cpu_seconds(pid: int) -> float:
    """The CPU time the process has used (user and system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_pdfs_are_rendered_in_a_child_replaced_every_n_documents(
    make_service: Callable[..., Service],
) -> None:
    service = make_service(pdf_documents_per_child=2)
    numbers = _issue_invoice_and_credit_note(service)
    children_after: dict[int, list[int]] = {}
    for render in range(1, 6):
        response = _download_fresh(service, numbers[render % 2])
        assert response.status_code == 200, response.text
        _assert_factur_x_pdf_a3(response.content)
        children_after[render] = _render_children()
    # Renders 1-2 in a first child, 3-4 in a second, 5 in a third (after a child's last
    # document the next one is being started: not looked at).
    first, second, third = children_after[1], children_after[3], children_after[5]
    assert len(first) == len(second) == len(third) == 1
    assert len({first[0], second[0], third[0], os.getpid()}) == 4
    assert "weasyprint" not in sys.modules  # this process rendered none of them


def test_a_render_child_killed_while_idle_is_replaced_and_the_document_rendered(
    make_service: Callable[..., Service],
) -> None:
    service = make_service()
    number = _issue_invoice_and_credit_note(service)[0]
    assert _download_fresh(service, number).status_code == 200
    [child] = _render_children()

    os.kill(child, signal.SIGKILL)  # as the kernel's out-of-memory killer would
    _assert_a_new_child_renders(service, number, child)


def test_a_render_child_that_dies_during_a_render_is_a_503_then_a_new_child_renders(
    make_service: Callable[..., Service],
) -> None:
    service = make_service()
    number = _issue_invoice_and_credit_note(service)[0]
    long = _issue_long_invoice(service)
    assert _download_fresh(service, number).status_code == 200
    [child] = _render_children()
    idle = _cpu_seconds(child)

    with ThreadPoolExecutor(1) as download:
        response = download.submit(_download_fresh, service, long)
        # Rendering (about 15 s of WeasyPrint): killed in the middle.
        wait_for(lambda: _cpu_seconds(child) > idle + 0.5, what="the child to render")
        os.kill(child, signal.SIGKILL)
        assert response.result().status_code == 503  # not rendered again: it may be the cause
    assert response.result().json()["code"] == "pdf_rendering_failed"

    _assert_a_new_child_renders(service, number, child)


def test_a_render_longer_than_the_timeout_is_a_503_and_its_child_is_killed(
    make_service: Callable[..., Service],
) -> None:
    service = make_service(pdf_render_timeout_seconds=1)
    number = _issue_invoice_and_credit_note(service)[0]
    long = _issue_long_invoice(service)  # about 15 s of WeasyPrint
    assert _download_fresh(service, number).status_code == 200
    [child] = _render_children()

    started = time.monotonic()
    response = _download_fresh(service, long)
    assert response.status_code == 503
    assert response.json()["code"] == "pdf_rendering_failed"
    assert time.monotonic() - started < 10  # not the 15 s of the whole render
    assert _render_children() == []  # killed, not left rendering

    _assert_a_new_child_renders(service, number, child)


def test_a_render_child_idle_for_a_while_exits_and_the_next_render_starts_a_new_one() -> None:
    # 10 minutes in production; the renderer's own function takes a shorter wait.
    assert html_to_pdf("<p>Facture</p>", idle_seconds=1).startswith(b"%PDF-")
    [child] = _render_children()

    wait_for(lambda: not _render_children(), timeout=5, what="the idle child to exit")
    assert html_to_pdf("<p>Avoir</p>", idle_seconds=1).startswith(b"%PDF-")
    [replacement] = _render_children()
    assert replacement != child
