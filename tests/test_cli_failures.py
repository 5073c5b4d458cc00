"""Every CLI command's failure paths: one plain line on stderr, a non-zero exit, never a
traceback; and the small things a newcomer reads first (--version, help, headers)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import run_meterbill

CONFIGURATION = ("METERBILL_", "STRIPE_", "BILLING_")  # what the tests' environment may set
UNREACHABLE_DB = "postgresql+psycopg://nobody@127.0.0.1:1/none"
DB_COMMANDS = [
    ["migrate"],
    ["apikey", "create", "x"],
    ["jobs", "retry", "1"],
    ["demo", "--users", "1"],
    ["usage", "rebuild"],
    ["invoices", "export", "--month", "2026-01"],
    ["invoices", "render"],
    ["worker", "--burst"],
    ["serve"],
]


def meterbill(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(CONFIGURATION)
    }
    environment.update({"METERBILL_HOME": str(home), **env})
    return subprocess.run(
        [sys.executable, "-m", "meterbill", "-q", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        cwd=home,
    )


def assert_plain_failure(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode != 0, (result.args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, (result.args, result.stderr)
    assert lines[0].startswith("meterbill: error: "), lines[0]
    for text in expected:
        assert text in lines[0], (text, lines[0])


def run_all(
    home: Path, cases: list[tuple[list[str], dict[str, str]]]
) -> list[subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda case: meterbill(*case[0], home=home, **case[1]), cases))


def test_unreachable_or_unknown_database_is_one_line(tmp_path: Path) -> None:
    cases = [(cmd, {"METERBILL_DATABASE_URL": UNREACHABLE_DB}) for cmd in DB_COMMANDS]
    cases += [(cmd, {"METERBILL_DATABASE_URL": "nosuchdb://x"}) for cmd in DB_COMMANDS[:2]]
    for (_command, env), result in zip(cases, run_all(tmp_path, cases), strict=True):
        if env["METERBILL_DATABASE_URL"] == UNREACHABLE_DB:
            assert_plain_failure(result, "cannot use the database")
        else:
            assert_plain_failure(result, "METERBILL_DATABASE_URL")


def test_bad_input_and_configuration_is_one_line(tmp_path: Path) -> None:
    bad_plans = tmp_path / "plans.toml"
    bad_plans.write_text("[plans.pro]\nlimits = { api_calls = -1 }\n", encoding="utf-8")
    cases: list[tuple[list[str], dict[str, str], tuple[str, ...]]] = [
        (["invoices", "export", "--month", "2026-01", "-o", "/proc/nope/x.csv"], {}, ("x.csv",)),
        (["invoices", "export", "--month", "2026-13"], {}, ("YYYY-MM",)),
        (["jobs", "retry", str(2**70)], {}, ("JOB_ID",)),
        (["jobs", "list", "--status", "lost"], {}, ("--status",)),
        (["jobs", "retry", "424242"], {}, ("no failed job",)),
        (["apikey", "revoke", "nope"], {}, ("no active API key",)),
        (["reconcile"], {}, ("STRIPE_SECRET_KEY",)),
        (["token", "user-1"], {}, ("METERBILL_JWT_SECRET",)),
        (["plans"], {"METERBILL_PLANS_FILE": str(bad_plans)}, ("plans.pro.limits.api_calls",)),
        (["serve"], {"METERBILL_PLANS_FILE": str(bad_plans)}, ("plans.toml",)),
        (["migrate"], {"METERBILL_STRIPE_TIMEOUT": "-1"}, ("invalid configuration",)),
        (["nosuchcommand"], {}, ("nosuchcommand",)),
        (["demo", "--users", "0"], {}, ("--users",)),
    ]
    results = run_all(tmp_path, [(c, e) for c, e, _ in cases])
    for (_command, _env, expected), result in zip(cases, results, strict=True):
        assert_plain_failure(result, *expected)


def test_serve_refuses_a_taken_port_before_saying_ready(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = meterbill("serve", "--port", str(port), home=tmp_path)
    assert_plain_failure(result, f"127.0.0.1:{port}")
    assert "serving" not in result.stdout


def test_version_help_and_headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What is printed, not how a process ends: in this process (the others here start one).
    monkeypatch.chdir(tmp_path)

    def meterbill(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        unset = {key: None for key in os.environ if key.startswith(CONFIGURATION)}
        return run_meterbill("-q", *args, env={**unset, "METERBILL_HOME": str(tmp_path), **env})

    version = meterbill("--version")
    assert version.returncode == 0 and version.stdout.startswith("meterbill ")
    for command in (["--help"], ["jobs", "list", "--help"], ["apikey", "create", "--help"]):
        shown = meterbill(*command, COLUMNS="100")
        assert shown.returncode == 0
        for marker in ("<bool>", "<str>", "<int>", "{"):
            assert marker not in shown.stdout, (command, marker, shown.stdout)
    created = meterbill("apikey", "create", "billing-backend")
    assert created.returncode == 0 and created.stdout.startswith("mb_")
    listed = meterbill("apikey", "list").stdout.splitlines()
    assert listed[0].split("\t")[:3] == ["prefix", "name", "state"]
    assert "billing-backend" in listed[1]
    migrated = meterbill("migrate").stdout
    assert "head revision" in migrated and "up to date" in migrated


@pytest.mark.parametrize("quiet", [False, True])
def test_every_command_says_where_the_data_lives(tmp_path: Path, quiet: bool) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("METERBILL_")}
    environment["METERBILL_HOME"] = str(tmp_path / "home")
    args = [sys.executable, "-m", "meterbill", *(["-q"] if quiet else []), "apikey", "list"]
    result = subprocess.run(
        args, env=environment, capture_output=True, text=True, timeout=60, check=True
    )
    if quiet:
        assert result.stderr == ""
    else:
        assert f"home {tmp_path / 'home'}" in result.stderr
        assert f"database sqlite:///{tmp_path / 'home' / 'meterbill.db'}" in result.stderr
    assert (tmp_path / "home" / "meterbill.db").is_file()
