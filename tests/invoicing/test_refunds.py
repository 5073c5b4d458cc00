"""Refunds: a negative ledger entry and a credit note AVOIR-YYYYMM-XXXX for each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from meterbill.db import utcnow
from tests import stripe_events as se
from tests.conftest import Service
from tests.invoicing.helpers import customer_of, documents, invoice_json, ledger, lines, posted
from tests.invoicing.invoice_payments_peer import invoice_payments_peer


@pytest.fixture
def invoicing(make_service: Callable[..., Service], tmp_path: Path) -> Service:
    return make_service(invoice_dir=tmp_path)


def _paid(service: Service, amount: int = 1080, intent: str = "pi_r") -> tuple[str, str]:
    customer = customer_of(service)
    invoice = se.invoice("in_r", customer, "sub_r", amount=amount, payment_intent=intent)
    posted(service, se.event("invoice.paid", invoice))
    return customer, documents(service)[0].invoice_number


def test_a_full_refund_issues_a_credit_note_mirroring_the_invoice(invoicing: Service) -> None:
    customer, number = _paid(invoicing)
    refund = se.event(
        "charge.refunded", se.charge_refunded(customer, "pi_r", 1080, [("re_1", 1080)])
    )
    posted(invoicing, refund)
    posted(invoicing, refund)  # redelivered: nothing more
    invoice, credit = documents(invoicing)
    month = f"{utcnow():%Y%m}"
    assert invoice.invoice_number == f"FACT-{month}-0001"
    assert credit.invoice_number == f"AVOIR-{month}-0001" and credit.kind == "credit_note"
    assert credit.credited_invoice_id == invoice.id
    assert (credit.amount_ht, credit.amount_tva, credit.amount) == (-900, -180, -1080)
    (line,) = lines(invoicing, credit)
    assert (line.quantity, line.vat_rate_bp, line.amount_ttc) == (1, 2000, -1080)
    _, refunded = ledger(invoicing)
    assert (refunded.type, refunded.amount, refunded.invoice_id) == ("refund", -1080, invoice.id)
    body = invoice_json(invoicing, number)
    assert body["credit_notes"] == [credit.invoice_number]
    assert body["balance"]["refunded"] == 1080 and body["balance"]["net_paid"] == 0
    assert body["balance"]["status"] == "refunded" and body["balance"]["credited"] == 1080
    assert invoice_json(invoicing, credit.invoice_number)["credited_invoice"] == number
    # The next invoice keeps its own sequence: FACT-...-0002, not 0003.
    posted(invoicing, se.event("invoice.paid", se.invoice("in_next", customer, None)))
    assert documents(invoicing)[-1].invoice_number == f"FACT-{month}-0002"


def test_several_partial_refunds_each_issue_their_credit_note(invoicing: Service) -> None:
    """Stripe's charge lists every refund so far; each new one is credited once."""
    customer, number = _paid(invoicing)
    posted(
        invoicing,
        se.event("charge.refunded", se.charge_refunded(customer, "pi_r", 1080, [("re_a", 300)])),
    )
    both = se.charge_refunded(customer, "pi_r", 1080, [("re_a", 300), ("re_b", 480)])
    posted(invoicing, se.event("charge.refunded", both))
    credits = documents(invoicing, kind="credit_note")
    assert [c.invoice_number[-4:] for c in credits] == ["0001", "0002"]
    assert [(c.amount_ht, c.amount_tva, c.amount) for c in credits] == [
        (-250, -50, -300),
        (-400, -80, -480),
    ]
    assert [t.amount for t in ledger(invoicing)] == [1080, -300, -480]
    balance = invoice_json(invoicing, number)["balance"]
    assert balance["refunded"] == 780 and balance["status"] == "partially_refunded"


def test_todays_charge_without_refund_list_counts_each_partial_refund_once(
    invoicing: Service,
) -> None:
    """Today's API does not embed `refunds` in the charge: the cumulative
    `amount_refunded` tells what is new, even when the events come out of order."""
    customer, _ = _paid(invoicing)

    def refunded(cumulative: int) -> dict[str, object]:
        charge = se.charge_refunded(customer, "pi_r", 1080, [("re_x", cumulative)])
        del charge["refunds"]
        charge["id"] = "ch_today"
        return se.event("charge.refunded", charge)

    later, earlier = refunded(800), refunded(200)
    posted(invoicing, later)
    posted(invoicing, earlier)  # late: already counted within the 800
    posted(invoicing, refunded(1080))
    assert [t.amount for t in ledger(invoicing)] == [1080, -800, -280]
    assert [c.amount for c in documents(invoicing, kind="credit_note")] == [-800, -280]


def test_a_refund_arriving_before_its_payment_is_credited_when_the_invoice_is_issued(
    invoicing: Service,
) -> None:
    customer = customer_of(invoicing)
    posted(
        invoicing,
        se.event("charge.refunded", se.charge_refunded(customer, "pi_e", 900, [("re_e", 900)])),
    )
    assert documents(invoicing) == []
    posted(
        invoicing,
        se.event("invoice.paid", se.invoice("in_e", customer, None, payment_intent="pi_e")),
    )
    invoice, credit = documents(invoicing)
    assert credit.credited_invoice_id == invoice.id and credit.amount == -900
    assert [(t.type, t.invoice_id) for t in ledger(invoicing)] == [
        ("refund", invoice.id),
        ("payment", invoice.id),
    ]


def test_todays_events_without_payments_are_linked_through_stripes_invoice_payments(
    make_service: Callable[..., Service], tmp_path: Path
) -> None:
    """Today's `invoice.paid` does not include `payments`: the payment intent is asked of
    Stripe when the invoice is issued, or, if Stripe did not know it yet, when the refund
    comes; either way the refund is credited against the right invoice."""
    with invoice_payments_peer() as peer:
        service = make_service(
            invoice_dir=tmp_path, stripe_secret_key="sk_test_x", stripe_api_base=peer.url
        )
        customer = customer_of(service)
        known, unknown = (se.invoice(f"in_{n}", customer, None, amount=1200) for n in "kl")
        for stripe_invoice in (known, unknown):
            del stripe_invoice["payments"]
        peer.paid("in_k", "pi_k", 1200)
        posted(service, se.event("invoice.paid", known))
        posted(service, se.event("invoice.paid", unknown))
        peer.paid("in_l", "pi_l", 1200)
        for intent in ("pi_k", "pi_l"):
            refund = se.charge_refunded(customer, intent, 1200, [(f"re_{intent}", 600)])
            posted(service, se.event("charge.refunded", refund))
    first, second, credit_k, credit_l = documents(service)
    assert [t.stripe_payment_intent for t in ledger(service)[:2]] == ["pi_k", None]
    assert (credit_k.credited_invoice_id, credit_k.amount) == (first.id, -600)
    assert (credit_l.credited_invoice_id, credit_l.amount) == (second.id, -600)
    assert any("payment%5Bpayment_intent%5D=pi_l" in r for r in peer.requests)
