"""`meterbill invoices audit`: books that prove they were never touched. Tampering is done
on the stored files, or in a copy of the database whose immutability triggers are dropped."""

# ruff: noqa: S608 (the tests tamper with their own copy of the books in plain SQL)

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from meterbill.cli import app
from meterbill.db import utcnow
from meterbill.invoicing.seals import seal_documents
from tests import stripe_events as se
from tests.conftest import TEST_SELLER, Service
from tests.invoicing.helpers import customer_of, documents, posted

TRIGGERS = {
    "sqlite": [
        f"DROP TRIGGER IF EXISTS {table}_no_{action}"
        for table in ("invoices", "invoice_lines", "document_seals")
        for action in ("update", "delete")
    ],
    "postgresql": [
        f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}"
        for table in ("invoices", "invoice_lines", "document_seals")
    ],
}


def _books(service: Service) -> list[str]:
    """Two invoices and a credit note, sealed."""
    customer = customer_of(service)
    for number in (1, 2):
        paid = se.invoice(
            f"in_a{number}", customer, None, amount=1080, payment_intent=f"pi_{number}"
        )
        posted(service, se.event("invoice.paid", paid))
    refund = se.charge_refunded(customer, "pi_1", 1080, [("re_a", 500)])
    posted(service, se.event("charge.refunded", refund))
    seal_documents(service.db, service.settings)
    return [d.invoice_number for d in documents(service)]


def _audit(database_url: str, invoice_dir: Path) -> tuple[int, str]:
    env = {
        "METERBILL_DATABASE_URL": database_url,
        "METERBILL_INVOICE_DIR": str(invoice_dir),
        **{f"METERBILL_{key.upper()}": value for key, value in TEST_SELLER.items()},
    }
    result = CliRunner().invoke(app, ["invoices", "audit"], env=env)
    return result.exit_code, result.output


def test_clean_books_pass_and_a_tampered_pdf_is_named(
    make_service: Callable[..., Service], database_url: str, tmp_path: Path
) -> None:
    service = make_service(invoice_dir=tmp_path)
    _, second, _ = _books(service)
    code, output = _audit(database_url, tmp_path)
    assert code == 0, output
    assert "3 documents audited, 0 problems" in output
    audit = service.client.get("/readyz").json()["details"]["invoicing"]["last_audit"]
    assert audit["ok"] is True and audit["documents"] == 3

    (pdf,) = tmp_path.glob(f"*/*/{second}.pdf")
    pdf.write_bytes(pdf.read_bytes().replace(b"10,80", b"01,80", 1) + b"\n")
    code, output = _audit(database_url, tmp_path)
    assert code == 1
    problems = [line for line in output.splitlines() if "\t" in line]
    assert problems == [f"{second}\tfile\tPDF file does not match its SHA-256"]
    audit = service.client.get("/readyz").json()["details"]["invoicing"]["last_audit"]
    assert audit["ok"] is False and audit["problems"] == 1


@contextmanager
def _copy_without_triggers(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A copy of the test's database, its immutability triggers dropped."""
    if database_url.startswith("sqlite"):
        copy = tmp_path / f"copy-{uuid.uuid4().hex[:6]}.db"
        source = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        target = sqlite3.connect(copy)
        source.backup(target)
        source.close()
        for statement in TRIGGERS["sqlite"]:
            target.execute(statement)
        target.commit()
        target.close()
        yield f"sqlite:///{copy}"
        return
    name = f"copy_{uuid.uuid4().hex[:10]}"
    admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    original = database_url.rsplit("/", 1)[1]
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{original}"'))
    url = database_url.rsplit("/", 1)[0] + f"/{name}"
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in TRIGGERS["postgresql"]:
            conn.execute(text(statement))
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _tamper(url: str, *statements: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
    engine.dispose()


def test_a_broken_chain_a_changed_amount_and_a_hand_made_gap_are_named(
    make_service: Callable[..., Service], database_url: str, tmp_path: Path
) -> None:
    service = make_service(invoice_dir=tmp_path)
    first, second, credit = _books(service)
    service.stop()
    month = f"{utcnow():%Y%m}"
    assert first == f"FACT-{month}-0001"

    with _copy_without_triggers(database_url, tmp_path) as copy:
        _tamper(
            copy,
            "UPDATE document_seals SET previous_hash = 'ab' WHERE invoice_id = "
            f"(SELECT id FROM invoices WHERE invoice_number = '{second}')",
        )
        code, output = _audit(copy, tmp_path)
        assert code == 1
        assert f"{second}\tchain\tdoes not follow the previous document's hash" in output

    with _copy_without_triggers(database_url, tmp_path) as copy:
        _tamper(copy, f"UPDATE invoices SET amount = 1 WHERE invoice_number = '{second}'")
        code, output = _audit(copy, tmp_path)
        assert code == 1
        assert f"{second}\ttotals\ttotals differ from the sum of lines" in output
        assert f"{second}\tchain\tits data no longer match its chain hash" in output

    with _copy_without_triggers(database_url, tmp_path) as copy:
        invoice_id = f"(SELECT id FROM invoices WHERE invoice_number = '{first}')"
        _tamper(
            copy,
            f"DELETE FROM document_seals WHERE invoice_id IN (SELECT id FROM invoices "
            f"WHERE credited_invoice_id = {invoice_id} OR id = {invoice_id})",
            f"DELETE FROM invoice_lines WHERE invoice_id IN (SELECT id FROM invoices "
            f"WHERE credited_invoice_id = {invoice_id} OR id = {invoice_id})",
            f"UPDATE transactions SET invoice_id = NULL WHERE invoice_id = {invoice_id}",
            f"DELETE FROM invoices WHERE credited_invoice_id = {invoice_id}",
            f"DELETE FROM invoices WHERE invoice_number = '{first}'",
        )
        code, output = _audit(copy, tmp_path)
        assert code == 1
        assert f"{first}\tgap\tnumber missing from the series" in output
        assert f"{credit}\tgap\tnumber missing from the series" in output
        assert f"{second}\tchain\tdoes not follow the previous document's hash" in output
