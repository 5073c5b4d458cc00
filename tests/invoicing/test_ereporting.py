"""B2B and B2C told apart (from Stripe's customer tax ids), and the month's e-reporting
export for what is not a domestic B2B e-invoice."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from meterbill.cli import app
from meterbill.db import utcnow
from tests import stripe_events as se
from tests.conftest import TEST_SELLER, Service
from tests.invoicing.helpers import customer_of, documents, invoice_json, posted


def test_company_buyers_are_b2b_and_the_ereporting_export_holds_the_others(
    make_service: Callable[..., Service], database_url: str, tmp_path: Path
) -> None:
    service = make_service(invoice_dir=tmp_path)
    customer = customer_of(service)
    consumer = se.invoice("in_c", customer, None, amount=1080, payment_intent="pi_c")
    french_company = se.invoice("in_fr", customer, None, amount=2400)
    french_company["customer_tax_ids"] = [{"type": "fr_siren", "value": "404833048"}]
    german_company = se.invoice("in_de", customer, None, amount=2900)
    german_company["customer_tax_ids"] = [{"type": "eu_vat", "value": "DE123456789"}]
    for stripe_invoice in (consumer, french_company, german_company):
        posted(service, se.event("invoice.paid", stripe_invoice))
    refund = se.charge_refunded(customer, "pi_c", 1080, [("re_c", 1080)])
    posted(service, se.event("charge.refunded", refund))
    b2c, fr_b2b, de_b2b, _ = documents(service)
    assert invoice_json(service, b2c.invoice_number)["buyer"]["business"] is False
    fr_buyer = invoice_json(service, fr_b2b.invoice_number)["buyer"]
    assert fr_buyer["business"] is True and fr_buyer["siren"] == "404833048"
    assert invoice_json(service, de_b2b.invoice_number)["buyer"]["country"] == "DE"

    env = {
        "METERBILL_DATABASE_URL": database_url,
        **{f"METERBILL_{key.upper()}": value for key, value in TEST_SELLER.items()},
    }
    month = f"{utcnow():%Y-%m}"
    result = CliRunner().invoke(app, ["invoices", "ereporting", "--month", month], env=env)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    transactions = {
        (r["categorie"], r["categorie_tva"]): r for r in rows if r["flux"] == "transactions"
    }
    assert set(transactions) == {("B2C", "S"), ("B2B_INTERNATIONAL", "AE")}  # not FR B2B
    consumer_row = transactions[("B2C", "S")]
    assert consumer_row["nb_documents"] == "2"  # the invoice and its credit note
    assert consumer_row["montant_ttc"] == "0.00"  # refunded in full
    german_row = transactions[("B2B_INTERNATIONAL", "AE")]
    assert (german_row["montant_ht"], german_row["montant_tva"]) == ("29.00", "0.00")
    assert {r["flux"] for r in rows} == {"transactions", "paiements"}
    bad = CliRunner().invoke(app, ["invoices", "ereporting", "--month", "2026-13"], env=env)
    assert bad.exit_code == 2 and "invalid month" in bad.output
