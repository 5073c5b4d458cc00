"""`meterbill accounting …`: exports for the accountant."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from meterbill.config import Settings

accounting_app = typer.Typer(help="Exports for the accountant.", no_args_is_help=True)


@accounting_app.command("fec")
def accounting_fec(
    year: Annotated[int, typer.Option(help="Fiscal year (calendar year), YYYY.", min=2000)],
    output_dir: Annotated[
        Path, typer.Option("--output-dir", "-d", help="Where to write the file.")
    ] = Path("."),
) -> None:
    """Write the year's FEC as {SIREN}FEC{YYYY}1231.txt (18 columns, tab-separated)."""
    from meterbill.accounting.fec import fec_filename, write_fec
    from meterbill.db import Database
    from meterbill.invoicing.parties import seller_siren
    from meterbill.migrate import upgrade

    settings = Settings()
    siren = seller_siren(settings)
    if not siren:
        typer.echo("METERBILL_SELLER_SIREN is not set: the FEC is named after it", err=True)
        raise typer.Exit(2)
    target = output_dir / fec_filename(siren, year)
    db = Database(settings.database_url)
    upgrade(db.engine)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with db.reading() as session, open(target, "w", encoding="utf-8", newline="") as out:
            count = write_fec(session, settings, year, out)
    finally:
        db.dispose()
    typer.echo(f"{count} entries written to {target}")
