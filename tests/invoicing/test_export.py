"""`meterbill invoices export --month YYYY-MM`: the month's documents as CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from meterbill.cli import app
from tests import stripe_events as se
from tests.conftest import Clock, Service
from tests.invoicing.helpers import customer_of, posted


def test_export_writes_the_months_invoices_and_credit_notes(
    make_service: Callable[..., Service], tmp_path: Path
) -> None:
    november = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    service = make_service(clock=Clock(november), invoice_dir=tmp_path)
    customer = customer_of(service)
    paid = se.invoice("in_x1", customer, None, amount=1080, payment_intent="pi_x1")
    posted(service, se.event("invoice.paid", paid))
    posted(service, se.event("invoice.paid", se.invoice("in_x2", customer, None, amount=2400)))
    refund = se.charge_refunded(customer, "pi_x1", 1080, [("re_x1", 1080)])
    posted(service, se.event("charge.refunded", refund))
    service.clock.fixed = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)
    posted(service, se.event("invoice.paid", se.invoice("in_x3", customer, None)))

    runner = CliRunner()
    env = {"METERBILL_DATABASE_URL": service.settings.database_url}
    out = tmp_path / "nov.csv"
    result = runner.invoke(
        app, ["invoices", "export", "--month", "2026-11", "--output", str(out)], env=env
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [(r["numero"], r["type"]) for r in rows] == [
        ("FACT-202611-0001", "facture"),
        ("FACT-202611-0002", "facture"),
        ("AVOIR-202611-0001", "avoir"),
    ]
    first, _, credit = rows
    assert (first["total_ht"], first["total_tva"], first["total_ttc"]) == ("9.00", "1.80", "10.80")
    assert first["taux_tva"] == "20.00" and first["date_emission"] == "2026-11-20"
    assert first["client"] == "Buyer SAS" and first["stripe_invoice_id"] == "in_x1"
    assert credit["total_ttc"] == "-10.80" and credit["facture_origine"] == "FACT-202611-0001"

    december = runner.invoke(app, ["invoices", "export", "--month", "2026-12"], env=env)
    assert december.exit_code == 0
    assert "FACT-202612-0001" in december.stdout and "FACT-202611" not in december.stdout
    bad = runner.invoke(app, ["invoices", "export", "--month", "2026-13"], env=env)
    assert bad.exit_code == 2
