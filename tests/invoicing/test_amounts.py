"""Amounts add up to the cent, whatever Stripe sends and however a refund is split."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meterbill.invoicing.amounts import credit_note_lines, lines_from_stripe_invoice, totals_of

line_amounts = st.lists(st.integers(min_value=0, max_value=500_000), min_size=0, max_size=5)
rates = st.sampled_from([0, 210, 550, 1000, 2000])


@settings(max_examples=200, deadline=None)
@given(amounts=line_amounts, rate=rates, extra=st.integers(-2_000, 2_000), exempt=st.booleans())
def test_lines_always_add_up_to_stripes_total(
    amounts: list[int], rate: int, extra: int, exempt: bool
) -> None:
    total = max(sum(amounts) + extra, 1)
    invoice = {
        "total": total,
        "lines": {"data": [{"amount": a, "quantity": 1} for a in amounts]},
    }
    lines = lines_from_stripe_invoice(invoice, lambda _price: rate, exempt)
    totals = totals_of(lines)
    assert totals.ttc == total
    assert all(line.amount_ht + line.amount_tva == line.amount_ttc for line in lines)
    if exempt:
        assert totals.tva == 0


@settings(max_examples=200, deadline=None)
@given(
    amounts=st.lists(st.integers(1, 100_000), min_size=1, max_size=4),
    rate=rates,
    cuts=st.lists(st.integers(1, 100), min_size=1, max_size=4),
)
def test_partial_refunds_give_back_the_vat_in_proportion_and_never_more(
    amounts: list[int], rate: int, cuts: list[int]
) -> None:
    invoice = {"total": sum(amounts), "lines": {"data": [{"amount": a} for a in amounts]}}
    lines = lines_from_stripe_invoice(invoice, lambda _price: rate, False)
    invoiced = totals_of(lines)
    remaining = invoiced.ttc
    for cut in cuts:
        refund = max(1, remaining * cut // 100)
        if refund > remaining:
            break
        credited = totals_of(credit_note_lines(lines, refund))
        assert credited.ttc == -refund
        assert credited.ht + credited.tva == credited.ttc
        assert abs(credited.tva * invoiced.ttc + refund * invoiced.tva) <= invoiced.ttc * len(lines)
        remaining -= refund
    full = totals_of(credit_note_lines(lines, invoiced.ttc))
    assert (full.ht, full.tva, full.ttc) == (-invoiced.ht, -invoiced.tva, -invoiced.ttc)
