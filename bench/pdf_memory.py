"""Memory and pace of invoice PDF rendering: `python -m bench.pdf_memory --renders 500`.

Two runs, each in a fresh process so neither inherits the other's imports:
- `inprocess`: WeasyPrint called in the benchmark's own process, as meterbill did before
  the render child (`HTML(string=…).write_pdf(pdf_variant="pdf/a-3b")`);
- `public`: meterbill's `render_document_pdf`, whatever it does (today: a child process
  recycled every `--per-child` documents).
Each prints, every 100 renders, the RSS of the process and of its render child (and the
largest RSS any render child reached, sampled after every render), then the renders per
second (the first render, which pays the imports, is timed apart).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import multiprocessing
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from meterbill.invoicing.models import Invoice, InvoiceLine

SELLER = (
    '{"name": "Nuage Conseil SAS", "address": "12 rue de la Paix\\n75002 Paris", '
    '"siren": "812345678", "vat_number": "FR40812345678", "legal_form": "SAS", '
    '"capital": "10 000 €", "rcs": "RCS Paris 812 345 678"}'
)


def _document(n: int) -> tuple[Invoice, list[InvoiceLine]]:
    """A paid monthly invoice with two lines, built in memory (no database)."""
    at = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    document = Invoice(
        invoice_number=f"F-202611-{n:05d}",
        kind="invoice",
        user_id=f"bench-{n}",
        period="2026-11",
        amount=2160,
        amount_ht=1800,
        amount_tva=360,
        currency="EUR",
        issued_at=at,
        paid_at=at,
        service_start=datetime(2026, 11, 1, tzinfo=UTC),
        service_end=datetime(2026, 12, 1, tzinfo=UTC),
        seller=SELLER,
        buyer_name=f"Client {n}",
        buyer_email=f"client{n}@example.com",
        buyer_address="3 avenue des Clients\n69002 Lyon\nFR",
    )
    lines = [
        InvoiceLine(
            position=i,
            description=description,
            quantity=1,
            unit_price_ht="900",
            vat_rate_bp=2000,
            amount_ht=900,
            amount_tva=180,
            amount_ttc=1080,
            period_start=document.service_start,
            period_end=document.service_end,
            vat_category="S",
        )
        for i, description in enumerate(("Abonnement Premium", "Dépassement de quota"))
    ]
    return document, lines


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _children() -> dict[int, float]:
    """The RSS of each live child process (the render child), by pid."""
    found: dict[int, float] = {}
    for child in multiprocessing.active_children():
        with contextlib.suppress(OSError):  # exited meanwhile (recycled)
            found[child.pid or 0] = _rss_mib(child.pid or 0)
    return found


def run(mode: str, renders: int, per_child: int) -> None:
    from meterbill.invoicing.pdf import render_document_html, render_document_pdf

    def in_process(document: Invoice, lines: list[InvoiceLine]) -> bytes:
        from weasyprint import HTML

        html = render_document_html(document, lines)
        return HTML(string=html).write_pdf(pdf_variant="pdf/a-3b")  # type: ignore[no-any-return]

    # The code before the render child has no such parameter: run it as it is.
    recycled = "documents_per_child" in inspect.signature(render_document_pdf).parameters
    options: dict[str, Any] = {"documents_per_child": per_child} if recycled else {}

    def public(document: Invoice, lines: list[InvoiceLine]) -> bytes:
        return render_document_pdf(document, lines, **options)

    render = in_process if mode == "inprocess" else public
    print(f"{mode}: start, process {_rss_mib(os.getpid()):.1f} MiB", flush=True)
    started = time.perf_counter()
    first = 0.0
    peak: dict[int, float] = {}  # each render child's largest RSS seen, sampled every render
    for n in range(1, renders + 1):
        pdf = render(*_document(n))
        assert pdf.startswith(b"%PDF-")
        if n == 1:
            first = time.perf_counter() - started
        for pid, rss in _children().items():
            peak[pid] = max(rss, peak.get(pid, 0.0))
        if n == 1 or n % 100 == 0:
            children = ", ".join(f"{pid} {rss:.1f} MiB" for pid, rss in _children().items())
            print(
                f"{mode}: after {n:4} renders, process {_rss_mib(os.getpid()):.1f} MiB, "
                f"children now: {children or 'none'}; {len(peak)} children so far, largest "
                f"{max(peak.values(), default=0.0):.1f} MiB",
                flush=True,
            )
    rest = time.perf_counter() - started - first
    print(
        f"{mode}: first render {first:.2f} s; then {(renders - 1) / rest:.1f} renders/s "
        f"({renders - 1} in {rest:.1f} s)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=500)
    parser.add_argument("--per-child", type=int, default=50, help="documents per child")
    parser.add_argument("--mode", choices=("inprocess", "public"), help="one run only")
    args = parser.parse_args()
    if args.mode:
        run(args.mode, args.renders, args.per_child)
        return
    print(f"== pdf_memory; os.cpu_count() = {os.cpu_count()}", flush=True)
    for mode in ("inprocess", "public"):
        command = [sys.executable, "-m", "bench.pdf_memory", "--mode", mode]
        command += ["--renders", str(args.renders), "--per-child", str(args.per_child)]
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
