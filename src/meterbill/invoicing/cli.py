"""`meterbill invoices …`: the accountant's CSV export, and rendering missing PDFs."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, TextIO

import typer
from sqlalchemy.orm import Session

from meterbill.config import Settings
from meterbill.db import Database

invoices_app = typer.Typer(help="Invoices and credit notes.", no_args_is_help=True)


def _write_month_csv(month: str, output: str, write: Callable[[Session, TextIO], int]) -> int:
    """Run `write` on a reading session into `output` (a file, or - for stdout); one
    plain line and exit 2 for a malformed month."""
    from meterbill.errors import InvalidMonth

    db = _database(Settings())
    try:
        with db.reading() as session:
            if output == "-":
                return write(session, sys.stdout)
            with open(output, "w", encoding="utf-8", newline="") as out:
                return write(session, out)
    except InvalidMonth:
        typer.echo("meterbill: error: invalid month: use YYYY-MM", err=True)
        raise typer.Exit(2) from None
    finally:
        db.dispose()


def _database(settings: Settings) -> Database:
    from meterbill.migrate import upgrade

    db = Database(settings.database_url)
    upgrade(db.engine)
    return db


@invoices_app.command("export")
def invoices_export(
    month: Annotated[str, typer.Option(help="Month of issue, YYYY-MM.")],
    output: Annotated[
        str, typer.Option("--output", "-o", help="CSV file to write; - for stdout.")
    ] = "-",
) -> None:
    """Write the month's invoices and credit notes as CSV, for the accountant."""
    from meterbill.invoicing.export import write_month_csv

    count = _write_month_csv(
        month, output, lambda session, out: write_month_csv(session, month, out)
    )
    typer.echo(f"{count} documents for {month}", err=True)


@invoices_app.command("render")
def invoices_render(
    newest: Annotated[
        int, typer.Option(help="How many recent documents to check.", min=1, max=1_000_000)
    ] = 1000,
) -> None:
    """Render the PDFs that are missing among the newest documents."""
    from rich.console import Console
    from rich.progress import Progress
    from sqlalchemy import select

    from meterbill.invoicing.models import Invoice
    from meterbill.invoicing.pdf import ensure_pdf, pdf_file

    settings = Settings()
    db = _database(settings)
    with db.reading() as session:
        documents = session.scalars(select(Invoice).order_by(Invoice.id.desc()).limit(newest)).all()
        missing = [d.invoice_number for d in documents if not pdf_file(settings, d).is_file()]
    failed = []
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("rendering PDFs", total=len(missing))
        for number in missing:
            try:
                ensure_pdf(db, settings, number)
            except Exception as exc:
                failed.append(f"{number}: {type(exc).__name__}: {exc}".splitlines()[0])
            progress.advance(task)
    db.dispose()
    typer.echo(f"{len(missing) - len(failed)} PDFs rendered under {settings.invoice_dir}")
    for line in failed:
        typer.echo(f"meterbill: error: not rendered: {line}", err=True)
    if failed:
        raise typer.Exit(1)


@invoices_app.command("audit")
def invoices_audit() -> None:
    """Check the books: gaps, dates, files against their SHA-256, the chain of seals,
    totals against lines and balances against the ledger. Exit 1 on any problem."""
    from meterbill.db import utcnow
    from meterbill.invoicing.audit import audit_books, record_audit
    from meterbill.invoicing.seals import seal_documents

    settings = Settings()
    db = _database(settings)
    try:
        try:
            seal_documents(db, settings)  # documents issued since the last pass
        except Exception as exc:
            typer.echo(f"some documents could not be sealed: {type(exc).__name__}", err=True)
        with db.reading() as session:
            report = audit_books(session, settings)
        record_audit(db, report, utcnow())
    finally:
        db.dispose()
    for problem in report.problems:
        typer.echo(f"{problem.number}\t{problem.check}\t{problem.message}")
    typer.echo(f"{report.documents} documents audited, {len(report.problems)} problems", err=True)
    if report.problems:
        raise typer.Exit(1)


@invoices_app.command("ereporting")
def invoices_ereporting(
    month: Annotated[str, typer.Option(help="Month of issue, YYYY-MM.")],
    output: Annotated[
        str, typer.Option("--output", "-o", help="CSV file to write; - for stdout.")
    ] = "-",
) -> None:
    """Write the month's e-reporting aggregates (B2C and international B2B sales, and
    their payments) as CSV, for a dematerialisation platform."""
    from meterbill.invoicing.ereporting import write_ereporting_csv

    settings = Settings()
    count = _write_month_csv(
        month, output, lambda session, out: write_ereporting_csv(session, settings, month, out)
    )
    typer.echo(f"{count} aggregates for {month}", err=True)
