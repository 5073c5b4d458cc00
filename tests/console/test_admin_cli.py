"""`meterbill admin create EMAIL`: the password from stdin or a prompt, argon2-hashed."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from meterbill.admin.models import AdminUser
from meterbill.admin.service import authenticate
from meterbill.db import Database
from meterbill.errors import InvalidCredentials
from tests.conftest import run_meterbill

PASSWORD = "a long enough password"


def _create(
    database_url: str, email: str, stdin: str, *flags: str
) -> subprocess.CompletedProcess[str]:
    env: dict[str, str | None] = {"METERBILL_DATABASE_URL": database_url}
    return run_meterbill("-q", "admin", "create", email, *flags, env=env, stdin=stdin)


def test_create_reads_the_password_from_stdin_and_keeps_only_a_hash(database_url: str) -> None:
    done = _create(database_url, "Ops@Example.com", PASSWORD + "\n", "--password-stdin")
    assert done.returncode == 0, done.stderr
    assert "ops@example.com created" in done.stdout
    db = Database(database_url)
    with db.reading() as session:
        (admin,) = session.scalars(select(AdminUser)).all()
    assert admin.email == "ops@example.com"
    assert admin.password_hash.startswith("$argon2id$") and PASSWORD not in admin.password_hash
    now = datetime.now(UTC)
    limits = {
        "max_failures": 5,
        "lockout": timedelta(minutes=1),
        "session_lifetime": timedelta(hours=1),
    }
    with db.transaction() as session:
        assert authenticate(session, "OPS@example.com", PASSWORD, now, **limits).token
    with db.transaction() as session, pytest.raises(InvalidCredentials):
        authenticate(session, "ops@example.com", PASSWORD + "x", now, **limits)
    db.dispose()


def test_create_prompts_twice_without_the_flag(database_url: str) -> None:
    done = _create(database_url, "ops@example.com", f"{PASSWORD}\n{PASSWORD}\n")
    assert done.returncode == 0, done.stderr


def test_a_short_password_or_a_second_account_fails_in_one_line(database_url: str) -> None:
    short = _create(database_url, "ops@example.com", "short\n", "--password-stdin")
    assert short.returncode == 1
    assert short.stderr.strip() == "not created: the password needs at least 12 characters"
    assert _create(database_url, "ops@example.com", PASSWORD, "--password-stdin").returncode == 0
    again = _create(database_url, "ops@example.com", PASSWORD, "--password-stdin")
    assert again.returncode == 1
    assert "Traceback" not in again.stderr and len(again.stderr.strip().splitlines()) == 1
