"""`meterbill invoices …`: the accountant's CSV export, and rendering missing PDFs."""

from __future__ import annotations

from typing import Annotated

import typer

from meterbill.config import Settings
from meterbill.db import Database

invoices_app = typer.Typer(help="Invoices and credit notes.", no_args_is_help=True)


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
    import sys

    from meterbill.errors import InvalidMonth
    from meterbill.invoicing.export import write_month_csv

    db = _database(Settings())
    try:
        with db.reading() as session:
            if output == "-":
                count = write_month_csv(session, month, sys.stdout)
            else:
                with open(output, "w", encoding="utf-8", newline="") as out:
                    count = write_month_csv(session, month, out)
    except InvalidMonth:
        typer.echo("meterbill: error: invalid month: use YYYY-MM", err=True)
        raise typer.Exit(2) from None
    finally:
        db.dispose()
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
