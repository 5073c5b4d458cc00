"""The `meterbill` command: serve, migrate, apikey, plans, token, …

Every failure is one plain line on stderr and a non-zero exit (`main` below), and every
command starts by saying where its data lives."""

from __future__ import annotations

import socket
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from sqlalchemy import select

from meterbill import __version__
from meterbill.accounting.cli import accounting_app
from meterbill.admin.cli import admin_app
from meterbill.config import Settings, meterbill_home
from meterbill.db import Database, url_for_display
from meterbill.invoicing.cli import invoices_app

app = typer.Typer(
    help="meterbill: self-hosted billing for SaaS products.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(invoices_app, name="invoices")
app.add_typer(accounting_app, name="accounting")
apikey_app = typer.Typer(help="Server-to-server API keys.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")
usage_app = typer.Typer(help="Usage metering.", no_args_is_help=True)
app.add_typer(usage_app, name="usage")
app.add_typer(admin_app, name="admin")


def fail(message: str, code: int = 1) -> NoReturn:
    """Say what went wrong in one line on stderr and exit non-zero."""
    typer.echo(f"meterbill: error: {message}", err=True)
    raise typer.Exit(code)


class KeyScope(StrEnum):
    ingest = "ingest"
    read = "read"
    admin = "admin"


def _database(settings: Settings) -> Database:
    from meterbill.migrate import upgrade

    db = Database(settings.database_url)
    upgrade(db.engine)
    return db


def where_data_lives(settings: Settings) -> str:
    """One line naming the data home, the database (password hidden) and the .env read."""
    from meterbill.config import env_files

    database = url_for_display(settings.database_url)
    found = [str(path.resolve()) for path in env_files() if path.is_file()]
    dotenv = ", ".join(found) if found else "none"
    return (
        f"meterbill {__version__} · home {meterbill_home()} · database {database} · .env {dotenv}"
    )


def _version(value: bool) -> None:
    if value:
        typer.echo(f"meterbill {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Do not print where the data lives.")
    ] = False,
) -> None:
    """meterbill: self-hosted billing for SaaS products.

    Data lives in METERBILL_HOME (default: the user data directory), printed at start."""
    if not quiet and not ctx.resilient_parsing:
        settings = Settings()
        typer.echo(where_data_lives(settings), err=True)
        stray = stray_database(settings)
        if stray:
            typer.echo(stray, err=True)


def stray_database(settings: Settings) -> str | None:
    """A warning when ./meterbill.db (where meterbill kept its data before METERBILL_HOME)
    exists but another database is used; else None."""
    here = Path("meterbill.db").resolve()
    if not here.is_file() or settings.database_url.startswith(f"sqlite:///{here}"):
        return None
    return (
        f"meterbill: warning: {here} is not used (it was the default database before "
        "METERBILL_HOME); to use it, set METERBILL_HOME=. or METERBILL_DATABASE_URL"
    )


def _port_free(host: str, port: int) -> str | None:
    """None when `host:port` can be listened on, else why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Interface to listen on.", metavar="HOST")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Port to listen on.", min=1, max=65535, metavar="PORT")
    ] = 8793,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1, max=64, metavar="N")] = 1,
) -> None:
    """Serve the HTTP API (migrations are applied first)."""
    import uvicorn

    from meterbill.app import seller_identity_warning
    from meterbill.invoicing.parties import missing_seller_fields
    from meterbill.serving import NoDelayHttpToolsProtocol

    problem = _port_free(host, port)
    if problem:
        fail(f"cannot listen on {host}:{port}: {problem}")
    settings = Settings()
    settings.catalog()  # a bad plans file fails here, before anything says "serving"
    _database(settings).dispose()
    missing = missing_seller_fields(settings)
    if missing:
        typer.echo(f"warning: {seller_identity_warning(missing)}", err=True)
    typer.echo(
        f"meterbill serving on http://{host}:{port} ({url_for_display(settings.database_url)}; "
        f"docs: http://{host}:{port}/docs)"
    )
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
    """Apply database migrations up to the newest (the head revision)."""
    from meterbill.migrate import current_revision, head_revision

    settings = Settings()
    db = _database(settings)
    current = current_revision(db.engine)
    db.dispose()
    head = head_revision()
    state = "up to date" if current == head else "NOT at head"
    typer.echo(f"database at revision {current} (head revision {head}: {state})")


@app.command()
def plans() -> None:
    """List the plans: Stripe price, monthly limits per metric, what happens at a limit."""
    from meterbill.billing.catalog import list_plans
    from meterbill.billing.gateway import StripeGateway

    settings = Settings()
    listing = list_plans(settings.catalog(), StripeGateway(settings))
    typer.echo("plan\tprice\tstripe price\tat the limit\tmonthly limits")
    for plan in listing.plans:
        if plan.price:
            interval = f"/{plan.price.interval}" if plan.price.interval else ""
            price = f"{plan.price.amount / 100:.2f} {plan.price.currency.upper()}{interval}"
        else:
            price = "free" if not plan.stripe_price else "?"
        limits = ", ".join(
            f"{'unlimited' if limit is None else limit} {metric}"
            for metric, limit in plan.limits.items()
        )
        typer.echo(f"{plan.name}\t{price}\t{plan.stripe_price or '-'}\t{plan.on_limit}\t{limits}")


@app.command()
def token(
    user_id: Annotated[
        str, typer.Argument(help="The user id (the token's `sub`).", metavar="USER_ID")
    ],
    email: Annotated[str | None, typer.Option(help="Email claim.", metavar="EMAIL")] = None,
    hours: Annotated[
        int, typer.Option(help="Hours until it expires.", min=1, max=24 * 365, metavar="N")
    ] = 24,
) -> None:
    """Print a signed end-user token, for trying the API (needs METERBILL_JWT_SECRET)."""
    from meterbill.auth.service import issue_user_token

    typer.echo(issue_user_token(Settings(), user_id, email=email, hours=hours))


@app.command()
def dev(
    port: Annotated[
        int, typer.Option(help="Port for meterbill.", min=1, max=65535, metavar="PORT")
    ] = 8793,
) -> None:
    """Run meterbill with a local Stripe, a mailbox that prints emails, and a demo token."""
    import signal
    import threading

    from meterbill.dev import DevSetupError, start_dev, walkthrough

    host = "127.0.0.1"
    problem = _port_free(host, port)
    if problem:
        fail(f"cannot listen on {host}:{port}: {problem}")
    try:
        stack = start_dev(host, port, lambda text: typer.echo(text))
    except DevSetupError as exc:
        fail(str(exc))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    typer.echo(walkthrough(stack, f"http://{host}:{port}"))
    try:
        stop.wait()
    finally:
        stack.stop()
        typer.echo("meterbill dev stopped")


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Argument(help="What the key is for.", metavar="NAME")],
    scope: Annotated[
        list[KeyScope] | None,
        typer.Option(
            help="What the key may do (repeatable): ingest (send usage), read (quota "
            "checks), admin (everything else). Default: all three.",
            case_sensitive=False,
        ),
    ] = None,
) -> None:
    """Create an API key; it is printed once and only its hash is kept."""
    from meterbill.auth.service import SCOPES, create_api_key

    scopes = tuple(s.value for s in scope) if scope else SCOPES
    db = _database(Settings())
    with db.transaction() as session:
        key = create_api_key(session, name, scopes)
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
        if keys:
            typer.echo("prefix\tname\tstate\tscopes\tcreated (UTC)")
        for key in keys:
            state = "revoked" if key.revoked_at else "active"
            typer.echo(
                f"{key.prefix}\t{key.name}\t{state}\t{key.scopes.replace(' ', ',')}\t"
                f"{key.created_at:%Y-%m-%d %H:%M}"
            )
    if not keys:
        typer.echo("no API keys yet: create one with `meterbill apikey create NAME`")


@apikey_app.command("revoke")
def apikey_revoke(
    prefix: Annotated[str, typer.Argument(help="The part after `mb_`.", metavar="PREFIX")],
) -> None:
    """Revoke the API key with this prefix (the part after `mb_`)."""
    from meterbill.auth.service import revoke_api_key

    db = _database(Settings())
    with db.transaction() as session:
        done = revoke_api_key(session, prefix)
    if not done:
        fail(f"no active API key with prefix {prefix}")
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


def _plain_help(command: Any) -> None:
    """Help without type markers: flags show nothing, values show an upper-case name."""
    for param in command.params:
        if param.param_type_name == "argument":
            name = param.metavar or (param.name or "value").upper()
            param.metavar = name
            param.display_type_rich = lambda ctx: None
            param._usage_display_name = lambda n=name, p=param: n if p.required else f"[{n}]"
        elif param.param_type_name == "option" and param.metavar is None:
            flag = param.is_flag or param.count
            param.metavar = "" if flag else (param.name or "value").upper()
    make_help_option = command.get_help_option

    def help_option(ctx: Any) -> Any:
        option = make_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        _plain_help(sub)


def main() -> None:
    """The console script: runs the CLI, and turns any failure into one line and exit 1."""
    from meterbill.cli_errors import debug_traceback, describe

    command = typer.main.get_command(app)
    _plain_help(command)
    try:
        code = command.main(prog_name="meterbill", standalone_mode=False)
    except KeyboardInterrupt:
        typer.echo("meterbill: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # usage errors
            message = exc.format_message()
            if message:  # (no message: the help was printed, as for a bare `meterbill`)
                hint = " (see --help)" if exc.exit_code == 2 else ""
                typer.echo(f"meterbill: error: {message}{hint}", err=True)
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":
            typer.echo("meterbill: aborted", err=True)
            sys.exit(1)
        details = debug_traceback(exc)
        if details:
            typer.echo(details, err=True)
        typer.echo(f"meterbill: error: {describe(exc)}", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
