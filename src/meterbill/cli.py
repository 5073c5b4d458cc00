"""The `meterbill` command: serve, migrate, apikey."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from sqlalchemy import select

from meterbill.accounting.cli import accounting_app
from meterbill.admin.cli import admin_app
from meterbill.config import Settings
from meterbill.db import Database, url_for_display
from meterbill.invoicing.cli import invoices_app

app = typer.Typer(help="meterbill: self-hosted billing for SaaS products.", no_args_is_help=True)
app.add_typer(invoices_app, name="invoices")
app.add_typer(accounting_app, name="accounting")
apikey_app = typer.Typer(help="Server-to-server API keys.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")
usage_app = typer.Typer(help="Usage metering.", no_args_is_help=True)
app.add_typer(usage_app, name="usage")
app.add_typer(admin_app, name="admin")


def _database(settings: Settings) -> Database:
    from meterbill.migrate import upgrade

    db = Database(settings.database_url)
    upgrade(db.engine)
    return db


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8793,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Serve the HTTP API (migrations are applied first)."""
    import uvicorn

    from meterbill.app import seller_identity_warning
    from meterbill.invoicing.parties import missing_seller_fields
    from meterbill.serving import NoDelayHttpToolsProtocol

    settings = Settings()
    _database(settings).dispose()
    missing = missing_seller_fields(settings)
    if missing:
        typer.echo(f"warning: {seller_identity_warning(missing)}", err=True)
    database = url_for_display(settings.database_url)
    typer.echo(f"meterbill serving on http://{host}:{port} ({database})")
    uvicorn.run(
        "meterbill.main:app",
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        proxy_headers=True,
        http=NoDelayHttpToolsProtocol,
    )


@app.command()
def migrate() -> None:
    """Apply database migrations up to the newest."""
    from meterbill.migrate import current_revision

    settings = Settings()
    db = _database(settings)
    typer.echo(f"database at revision {current_revision(db.engine)}")
    db.dispose()


@apikey_app.command("create")
def apikey_create(name: str) -> None:
    """Create an API key; it is printed once and only its hash is kept."""
    from meterbill.auth.service import create_api_key

    db = _database(Settings())
    with db.transaction() as session:
        key = create_api_key(session, name)
    typer.echo(key)
    typer.echo(
        "Keep this key now: meterbill stores only its hash and cannot show it again.", err=True
    )


@apikey_app.command("list")
def apikey_list() -> None:
    """List API keys (names and prefixes; never the keys)."""
    from meterbill.auth.models import ApiKey

    db = _database(Settings())
    with db.reading() as session:
        keys = session.scalars(select(ApiKey).order_by(ApiKey.id)).all()
        for key in keys:
            state = "revoked" if key.revoked_at else "active"
            typer.echo(f"{key.prefix}\t{key.name}\t{state}\t{key.created_at:%Y-%m-%d %H:%M}")
    if not keys:
        typer.echo("no API keys yet: create one with `meterbill apikey create NAME`")


@apikey_app.command("revoke")
def apikey_revoke(prefix: str) -> None:
    """Revoke the API key with this prefix (the part after `mb_`)."""
    from meterbill.auth.service import revoke_api_key

    db = _database(Settings())
    with db.transaction() as session:
        done = revoke_api_key(session, prefix)
    if not done:
        typer.echo(f"no active API key with prefix {prefix}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {prefix}")


@usage_app.command("rebuild")
def usage_rebuild(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report drift without fixing it.")
    ] = False,
) -> None:
    """Rebuild the daily and monthly usage totals from the raw events; report any drift."""
    from meterbill.usage.rebuild import event_id_span, rebuild_totals

    db = _database(Settings())
    with db.transaction() as session:
        span = event_id_span(session)
        with typer.progressbar(length=span, label="rebuilding", file=sys.stderr) as bar:
            report = rebuild_totals(session, fix=not dry_run, progress=bar.update)
    db.dispose()
    typer.echo(f"{report.events} events, {report.totals} daily totals, {len(report.drift)} drifted")
    for item in report.drift[:50]:
        typer.echo(
            f"  {item.table}\t{item.user_id}\t{item.metric}\t{item.period}\t"
            f"stored={_figures(item.stored)}\trebuilt={_figures(item.rebuilt)}"
        )
    if len(report.drift) > 50:
        typer.echo(f"  ... and {len(report.drift) - 50} more")
    if report.drift:
        typer.echo("fixed" if report.fixed else "not fixed (--dry-run)")


@usage_app.command("retention")
def usage_retention(
    keep_months: Annotated[
        int,
        typer.Option(
            "--keep-months", min=0, help="Keep the raw events of this many months before this one."
        ),
    ],
) -> None:
    """Drop raw usage events older than N months (PostgreSQL: whole monthly partitions,
    detached then dropped); daily and monthly totals, invoices and the audit trail stay."""
    from meterbill.db import utcnow
    from meterbill.usage.errors import RetentionTooShort
    from meterbill.usage.partitions import apply_retention

    settings = Settings()
    db = _database(settings)
    try:
        result = apply_retention(db.engine, keep_months, utcnow())
    except RetentionTooShort as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    finally:
        db.dispose()
    dropped = ", ".join(result.partitions) or "none"
    typer.echo(
        f"raw events kept from {result.horizon.isoformat()}; partitions dropped: {dropped}; "
        f"rows deleted: {result.deleted}"
    )


def _figures(figures: tuple[int, int, int] | None) -> str:
    if figures is None:
        return "none"
    total, events, peak = figures
    return f"{total}/{events} events/peak {peak}"


def _register_background_commands() -> None:
    from meterbill.jobs.cli import register

    register(app)


_register_background_commands()
