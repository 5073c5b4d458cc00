"""The catalogue of error codes (docs/errors.md), generated from meterbill's error classes.

Every subclass of MeterbillError anywhere in the package is an entry: its code, HTTP status,
French and English messages (`{name}` marks a part filled in when raised) and docstring.
`python -m meterbill.error_catalogue > docs/errors.md` rewrites the file; a test fails when
the file and the classes disagree.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator

import meterbill
from meterbill.errors import MeterbillError

# Modules with side effects at import (they run the CLI or build the served app), and
# Alembic's scripts; none of them defines an error class.
_SKIPPED = ("meterbill.__main__", "meterbill.main", "meterbill.migrations")


def _import_all() -> None:
    for module in pkgutil.walk_packages(meterbill.__path__, "meterbill."):
        if not module.name.startswith(_SKIPPED):
            importlib.import_module(module.name)


def _subclasses(cls: type[MeterbillError]) -> Iterator[type[MeterbillError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def error_classes() -> list[type[MeterbillError]]:
    """Every concrete error class, one per code (the first defined wins), by status, code."""
    from meterbill.openapi import HttpError

    _import_all()
    by_code: dict[str, type[MeterbillError]] = {}
    for cls in _subclasses(MeterbillError):
        if cls is HttpError or not cls.__module__.startswith("meterbill"):
            continue
        by_code.setdefault(cls.code, cls)
    return sorted(by_code.values(), key=lambda cls: (cls.status, cls.code))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    lines = [
        "# Error codes",
        "",
        'Every error answer is JSON `{"error": message, "code": code}` (plus `details` for',
        "validation errors, and the extra fields named below). The message is French by",
        "default and English when `Accept-Language` prefers `en`; the code never changes.",
        "`{name}` in a message is filled in when the error is raised.",
        "",
        "Generated from the error classes by `python -m meterbill.error_catalogue > "
        "docs/errors.md`;",
        "`tests/test_openapi.py` fails when this file is stale.",
        "",
        "| status | code | message (fr) | message (en) | meaning |",
        "|---|---|---|---|---|",
    ]
    for cls in error_classes():
        doc = inspect.getdoc(cls) or ""
        if cls.__doc__ is None or doc == inspect.getdoc(cls.__mro__[1]):
            doc = ""
        lines.append(
            f"| {cls.status} | `{cls.code}` | {_cell(cls.message_fr)} | "
            f"{_cell(cls.message_en)} | {_cell(doc)} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
