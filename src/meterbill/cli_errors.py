"""How the CLI says what went wrong: one plain line per failure, never a traceback.

`METERBILL_DEBUG=1` prints the traceback as well, for a bug report."""

from __future__ import annotations

import os
import traceback

from pydantic import ValidationError
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError

from meterbill.config import PlansFileError
from meterbill.errors import MeterbillError


def _first_line(text: object) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def describe(exc: BaseException) -> str:
    """One line that names what failed and why, for an operator."""
    if isinstance(exc, PlansFileError):
        return f"bad plans file {exc}"
    if isinstance(exc, MeterbillError):
        return exc.message_en
    if isinstance(exc, ValidationError):
        problems = [
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        ]
        return "invalid configuration: " + "; ".join(problems)
    if isinstance(exc, NoSuchModuleError | ArgumentError):
        return f"METERBILL_DATABASE_URL is not a usable database URL ({_first_line(exc)})"
    if isinstance(exc, OperationalError):
        return f"cannot use the database: {_first_line(exc.orig)}"
    if isinstance(exc, DBAPIError):
        return f"the database refused: {_first_line(exc.orig)}"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or _first_line(exc)}"
    if isinstance(exc, OverflowError):
        return f"number out of range ({_first_line(exc)})"
    return f"{type(exc).__name__}: {_first_line(exc)}" if str(exc) else type(exc).__name__


def debug_traceback(exc: BaseException) -> str | None:
    if os.environ.get("METERBILL_DEBUG", "") in ("", "0"):
        return None
    return "".join(traceback.format_exception(exc))
