"""One local invoice per paid Stripe invoice, with its lines, VAT, seller and buyer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from meterbill.db import utcnow
from tests import stripe_events as se
from tests.conftest import Service
from tests.invoicing.helpers import customer_of, documents, invoice_json, ledger, lines, posted
from tests.stripe_peer import StripePeer

SELLER = {
    "seller_name": "Nuage Conseil SAS",
    "seller_address": "12 rue de la Paix;75002 Paris",
    "seller_siren": "812345678",
    "seller_siret": "81234567800021",
    "seller_vat_number": "FR40812345678",
}


@pytest.fixture
def invoicing(make_service: Callable[..., Service], tmp_path: Path) -> Service:
    return make_service(invoice_dir=tmp_path / "invoices", **SELLER)


def test_redeliveries_and_twin_events_issue_one_invoice(invoicing: Service) -> None:
    customer = customer_of(invoicing)
    paid = se.invoice("in_once", customer, "sub_once", amount=1080, payment_intent="pi_once")
    first = se.event("invoice.payment_succeeded", paid)
    assert posted(invoicing, first) == "applied"
    assert posted(invoicing, first) == "duplicate"
    assert posted(invoicing, se.event("invoice.paid", paid)) == "applied"
    (invoice,) = documents(invoicing)
    assert invoice.invoice_number == f"FACT-{utcnow():%Y%m}-0001"
    assert [t.type for t in ledger(invoicing)] == ["payment"]


def test_without_stripe_tax_the_vat_is_worked_out_of_the_price_at_the_plan_rate(
    invoicing: Service,
) -> None:
    """Stripe charged 10.80 € and computed no tax: the price includes 20 % VAT (the
    premium plan's rate), so HT 9.00 + TVA 1.80 = TTC 10.80."""
    customer = customer_of(invoicing)
    stripe_invoice = se.invoice("in_vat", customer, "sub_vat", amount=1080)
    posted(invoicing, se.event("invoice.paid", stripe_invoice))
    (invoice,) = documents(invoicing)
    assert (invoice.amount_ht, invoice.amount_tva, invoice.amount) == (900, 180, 1080)
    (line,) = lines(invoicing, invoice)
    assert (line.quantity, line.unit_price_ht, line.vat_rate_bp) == (1, "900", 2000)
    assert (line.amount_ht, line.amount_tva, line.amount_ttc) == (900, 180, 1080)
    body = invoice_json(invoicing, invoice.invoice_number)
    assert body["currency"] == "EUR" and body["amount_ttc"] == 1080
    assert body["seller"]["siret"] == "81234567800021"
    assert body["seller"]["address"] == ["12 rue de la Paix", "75002 Paris"]
    assert any("pénalités" in mention for mention in body["seller"]["mentions"])
    assert body["buyer"]["name"] == "Buyer SAS"  # Stripe not configured: from the invoice
    assert body["balance"] == {
        "total": 1080,
        "paid": 1080,
        "refunded": 0,
        "net_paid": 1080,
        "credited": 0,
        "due": 0,
        "status": "paid",
    }


def _taxed_line(amount: int, tax: int, **extra: Any) -> dict[str, Any]:
    return {
        "amount": amount,
        "taxes": [
            {
                "amount": tax,
                "tax_behavior": "exclusive",
                "taxable_amount": amount,
                "taxability_reason": "standard_rated",
                "type": "tax_rate_details",
                "tax_rate_details": {"tax_rate": "txr_fr20"},
            }
        ],
        **extra,
    }


def test_stripe_computed_taxes_are_used_as_charged_with_usage_overage_line(
    invoicing: Service,
) -> None:
    """Today's shape: taxes per line (`taxes`) and per invoice (`total_taxes`); a usage
    overage line priced per unit; Stripe's amounts are kept to the cent."""
    customer = customer_of(invoicing)
    stripe_invoice = se.invoice("in_tax", customer, "sub_tax", amount=1050)
    plan_line = stripe_invoice["lines"]["data"][0]
    plan_line.update(_taxed_line(900, 180))
    overage = {
        **plan_line,
        "id": "il_overage",
        "description": "Appels d'API au-delà du forfait",
        "quantity": 1500,
        "pricing": {
            "type": "price_details",
            "price_details": {"price": "price_overage", "product": "prod_api"},
            "unit_amount_decimal": "0.1",
        },
        **_taxed_line(150, 30),
    }
    stripe_invoice["lines"]["data"].append(overage)
    stripe_invoice.update(
        subtotal=1050,
        total_excluding_tax=1050,
        total=1260,
        amount_paid=1260,
        total_taxes=[{"amount": 210, "tax_behavior": "exclusive", "taxable_amount": 1050}],
    )
    posted(invoicing, se.event("invoice.paid", stripe_invoice))
    (invoice,) = documents(invoicing)
    assert (invoice.amount_ht, invoice.amount_tva, invoice.amount) == (1050, 210, 1260)
    plan, usage = lines(invoicing, invoice)
    assert (plan.amount_ht, plan.amount_tva, plan.vat_rate_bp) == (900, 180, 2000)
    assert (usage.quantity, usage.unit_price_ht, usage.vat_rate_bp) == (1500, "0.1", 2000)
    assert (usage.amount_ht, usage.amount_tva, usage.amount_ttc) == (150, 30, 180)
    assert ledger(invoicing)[0].amount == 1260


def test_a_discounted_line_is_invoiced_at_the_amount_stripe_taxed(invoicing: Service) -> None:
    customer = customer_of(invoicing)
    stripe_invoice = se.invoice("in_disc", customer, None, amount=900)
    line = stripe_invoice["lines"]["data"][0]
    line.update(_taxed_line(900, 160))
    line["taxes"][0]["taxable_amount"] = 800
    line["discount_amounts"] = [{"amount": 100, "discount": "di_welcome"}]
    stripe_invoice.update(total=960, amount_paid=960, total_discount_amounts=[{"amount": 100}])
    posted(invoicing, se.event("invoice.paid", stripe_invoice))
    (invoice,) = documents(invoicing)
    assert (invoice.amount_ht, invoice.amount_tva, invoice.amount) == (800, 160, 960)
    (only,) = lines(invoicing, invoice)
    assert (only.unit_price_ht, only.vat_rate_bp) == ("800", 2000)


def test_old_api_shape_with_tax_percent(invoicing: Service) -> None:
    """API 2017-08-15 (localstripe): `subscription` and `payment_intent` at the top,
    `tax_percent` and `tax` for the whole invoice, the line's plan under `plan`."""
    customer = customer_of(invoicing)
    stripe_invoice = {
        "id": "in_old",
        "object": "invoice",
        "customer": customer,
        "subscription": "sub_old",
        "payment_intent": "pi_old",
        "currency": "eur",
        "status": "paid",
        "subtotal": 2900,
        "tax_percent": 5.5,
        "tax": 159,
        "total": 3059,
        "amount_paid": 3059,
        "lines": {
            "data": [
                {
                    "amount": 2900,
                    "quantity": 1,
                    "description": "Pro",
                    "plan": {"id": "price_pro_test", "amount": 2900},
                    "tax_amounts": [],
                }
            ]
        },
    }
    posted(invoicing, se.event("invoice.payment_succeeded", stripe_invoice))
    (invoice,) = documents(invoicing)
    assert (invoice.amount_ht, invoice.amount_tva, invoice.amount) == (2900, 159, 3059)
    (line,) = lines(invoicing, invoice)
    assert line.vat_rate_bp == 550 and line.description == "Pro"
    assert ledger(invoicing)[0].stripe_payment_intent == "pi_old"


def test_a_seller_under_the_vat_franchise_charges_no_vat_and_says_why(
    make_service: Callable[..., Service], tmp_path: Path
) -> None:
    service = make_service(invoice_dir=tmp_path, seller_vat_exempt=True, **SELLER)
    customer = customer_of(service)
    posted(service, se.event("invoice.paid", se.invoice("in_ex", customer, None, amount=900)))
    (invoice,) = documents(service)
    assert (invoice.amount_ht, invoice.amount_tva, invoice.amount) == (900, 0, 900)
    body = invoice_json(service, invoice.invoice_number)
    assert "TVA non applicable, art. 293 B du CGI" in body["seller"]["mentions"]
    assert body["lines"][0]["vat_rate_bp"] == 0


def test_an_issued_invoice_cannot_be_changed_even_by_sql(invoicing: Service) -> None:
    customer = customer_of(invoicing)
    posted(invoicing, se.event("invoice.paid", se.invoice("in_imm", customer, None)))
    for statement in (
        "UPDATE invoices SET amount = 1",
        "UPDATE invoice_lines SET amount_ttc = 1",
        "DELETE FROM invoice_lines",
        "DELETE FROM invoices",
    ):
        with pytest.raises(DBAPIError, match="immutable"), invoicing.db.transaction() as s:
            s.execute(text(statement))
    assert documents(invoicing)[0].amount == 900


def _peer_customer(peer: StripePeer, **fields: str) -> str:
    response = httpx.post(f"{peer.url}/v1/customers", data=fields, auth=("sk_test_x", ""))
    return str(response.json()["id"])


def test_buyer_comes_from_the_stripe_customer_or_the_invoice_when_stripe_fails(
    stripe_service: Service, stripe_peer: StripePeer
) -> None:
    customer = _peer_customer(
        stripe_peer,
        name="Atelier Martin SARL",
        email="compta@atelier-martin.fr",
        **{
            "address[line1]": "5 avenue Jean Jaurès",
            "address[postal_code]": "69007",
            "address[city]": "Lyon",
            "address[country]": "FR",
        },
    )
    customer_of(stripe_service, "user-1", customer)
    posted(stripe_service, se.event("invoice.paid", se.invoice("in_b1", customer, None)))
    stripe_peer.fail("/v1/customers", status=500)
    fallback = se.invoice("in_b2", customer, None)
    fallback["customer_address"] = {"line1": "1 place Bellecour", "city": "Lyon"}
    posted(stripe_service, se.event("invoice.paid", fallback))
    first, second = documents(stripe_service)
    assert first.buyer_name == "Atelier Martin SARL"
    assert first.buyer_email == "compta@atelier-martin.fr"
    assert first.buyer_address == "5 avenue Jean Jaurès\n69007 Lyon"
    assert second.buyer_name == "Buyer SAS" and second.buyer_email == "buyer@example.com"
    assert second.buyer_address == "1 place Bellecour\nLyon"
