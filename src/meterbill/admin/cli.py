"""`meterbill admin …`: operator accounts of the web console."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from meterbill.config import Settings
from meterbill.db import Database, utcnow

admin_app = typer.Typer(help="Operator accounts of the /admin console.", no_args_is_help=True)


def _database(settings: Settings) -> Database:
    from meterbill.migrate import upgrade

    db = Database(settings.database_url)
    upgrade(db.engine)
    return db


@admin_app.command("create")
def admin_create(
    email: str,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Create an operator who can sign in to /admin (password prompted, or from stdin)."""
    from meterbill.admin.service import create_admin
    from meterbill.errors import AdminExists

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    db = _database(Settings())
    try:
        with db.transaction() as session:
            create_admin(session, email, password, utcnow())
    except (ValueError, AdminExists) as exc:
        typer.echo(f"not created: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        db.dispose()
    typer.echo(f"operator {email.strip().lower()} created: sign in at /admin")
