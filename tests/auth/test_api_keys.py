"""API keys: shown once, stored hashed, revocable."""

from __future__ import annotations

import subprocess

import pytest
from sqlalchemy import select

from meterbill.auth.models import ApiKey
from meterbill.auth.service import verify_api_key
from meterbill.db import Database
from meterbill.errors import InvalidApiKey
from tests.conftest import run_meterbill


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_meterbill(*args, env={"METERBILL_DATABASE_URL": database_url})


def test_cli_creates_a_key_stored_only_as_a_hash(database_url: str) -> None:
    created = _cli(database_url, "apikey", "create", "backend")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("mb_")
    db = Database(database_url)
    with db.reading() as session:
        row = session.scalars(select(ApiKey)).one()
        assert row.name == "backend"
        secret = key.removeprefix("mb_").partition("_")[2]  # may itself hold "_"
        assert key not in (row.key_hash, row.prefix) and secret not in row.key_hash
        assert verify_api_key(session, key).id == row.id
        with pytest.raises(InvalidApiKey):
            verify_api_key(session, key[:-1] + ("A" if key[-1] != "A" else "B"))
    listed = _cli(database_url, "apikey", "list")
    assert "backend" in listed.stdout and key not in listed.stdout
    assert _cli(database_url, "apikey", "revoke", row.prefix).returncode == 0
    with db.reading() as session, pytest.raises(InvalidApiKey):
        verify_api_key(session, key)
    db.dispose()
