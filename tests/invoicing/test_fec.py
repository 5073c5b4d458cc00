"""`meterbill accounting fec --year`: the FEC, every entry balanced, totals equal to the
invoices and the ledger."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from typer.testing import CliRunner

from meterbill.cli import app
from meterbill.db import utcnow
from tests import stripe_events as se
from tests.conftest import TEST_SELLER, Service
from tests.invoicing.helpers import customer_of, documents, ledger, posted


def _cents(text: str) -> int:
    return int(Decimal(text.replace(",", ".")) * 100)


def test_the_fec_balances_every_entry_and_matches_the_invoices_and_the_ledger(
    make_service: Callable[..., Service], database_url: str, tmp_path: Path
) -> None:
    service = make_service(invoice_dir=tmp_path / "invoices")
    customer = customer_of(service)
    french = se.invoice("in_f1", customer, None, amount=1080, payment_intent="pi_f1")
    german = se.invoice("in_f2", customer, None, amount=2900, payment_intent="pi_f2")
    german["customer_tax_ids"] = [{"type": "eu_vat", "value": "DE123456789"}]
    for stripe_invoice in (french, german):
        posted(service, se.event("invoice.paid", stripe_invoice))
    refund = se.charge_refunded(customer, "pi_f1", 1080, [("re_f1", 360)])
    posted(service, se.event("charge.refunded", refund))
    year = utcnow().year

    env = {
        "METERBILL_DATABASE_URL": database_url,
        **{f"METERBILL_{key.upper()}": value for key, value in TEST_SELLER.items()},
    }
    result = CliRunner().invoke(
        app, ["accounting", "fec", "--year", str(year), "-d", str(tmp_path)], env=env
    )
    assert result.exit_code == 0, result.output
    path = tmp_path / f"812345678FEC{year}1231.txt"
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    header, body = rows[0], rows[1:]
    assert len(header) == 18 and header[0] == "JournalCode" and header[-1] == "Idevise"
    assert all(len(row) == 18 for row in body)
    entries: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    accounts: dict[tuple[str, str], int] = defaultdict(int)
    for row in body:
        debit, credit = _cents(row[11]), _cents(row[12])
        entries[row[2]][0] += debit
        entries[row[2]][1] += credit
        accounts[(row[0], row[4])] += debit - credit
    assert all(debit == credit for debit, credit in entries.values()), entries
    issued = documents(service)
    assert len([n for n in entries if n.startswith("VE")]) == len(issued) == 3
    assert accounts[("VE", "411000")] == sum(d.amount for d in issued)
    assert accounts[("VE", "706000")] == -sum(d.amount_ht for d in issued)
    assert accounts[("VE", "445710")] == -sum(d.amount_tva for d in issued)
    money = [t.amount for t in ledger(service) if t.type in ("payment", "refund")]
    assert accounts[("BQ", "512000")] == sum(money) == 1080 + 2900 - 360
    assert accounts[("BQ", "411000")] == -sum(money)
