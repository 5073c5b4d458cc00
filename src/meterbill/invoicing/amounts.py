"""From a Stripe invoice to invoice lines with amounts before tax (HT), VAT (TVA) and total
(TTC), in integer cents; and the lines of a credit note for (part of) an invoice.

Where the VAT comes from, in order:

1. Stripe computed taxes on the lines (`taxes` today, `tax_amounts` in old API versions):
   those amounts are what the customer was charged, so they are used as they are, on the
   amount Stripe taxed (`taxable_amount`: the line after its discounts).
2. Stripe computed tax only for the whole invoice (`total_taxes`, `total_tax_amounts`, the
   legacy `tax_percent`): that tax is spread over the lines in proportion to their amounts.
3. Stripe computed no tax: the amount charged is the price **tax included**, and the VAT
   inside it is worked out from the plan's `vat_rate_bp` (HT = TTC / (1 + rate), rounded
   half up; TVA = TTC - HT). A seller under the VAT franchise (`METERBILL_SELLER_VAT_EXEMPT`)
   charges no VAT at all: HT = TTC, rate 0.

Whatever the source, TTC of all lines adds up to Stripe's `total`: a difference (a discount,
a customer balance) becomes an adjustment line, so the document always adds up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

Obj = dict[str, Any]
ADJUSTMENT_LABEL = "Remise / ajustement"
SERVICE_LABEL = "Abonnement et consommation du service"


@dataclass(frozen=True)
class LineDraft:
    description: str
    quantity: int
    unit_price_ht: str  # cents, decimal string
    vat_rate_bp: int
    amount_ht: int
    amount_tva: int
    amount_ttc: int
    period_start: datetime | None = None
    period_end: datetime | None = None
    # EN 16931 VAT category (UNCL 5305): S standard, Z zero rate, E exempt (the seller's
    # VAT franchise), AE reverse charge (the buyer accounts for the VAT).
    vat_category: str = "S"


def vat_category(rate_bp: int, *, vat_exempt: bool, reverse_charge: bool) -> str:
    if vat_exempt:
        return "E"
    if reverse_charge:
        return "AE"
    return "S" if rate_bp > 0 else "Z"


@dataclass(frozen=True)
class Totals:
    ht: int
    tva: int
    ttc: int


def divide_rounded(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half away from zero, in integers only."""
    if denominator == 0:
        return 0
    quotient = Decimal(numerator) / Decimal(denominator)
    return int(quotient.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def unit_price(amount_ht: int, quantity: int) -> str:
    """Cents per unit as a decimal string: "900", "0.15"."""
    if quantity <= 0:
        return str(amount_ht)
    value = (Decimal(amount_ht) / quantity).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    return format(value.normalize(), "f")


def totals_of(lines: Sequence[LineDraft]) -> Totals:
    return Totals(
        ht=sum(line.amount_ht for line in lines),
        tva=sum(line.amount_tva for line in lines),
        ttc=sum(line.amount_ttc for line in lines),
    )


def _dict(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Obj]:
    data = _dict(value).get("data") if isinstance(value, dict) else value
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _stamp(value: Any) -> datetime | None:
    number = _int(value)
    return datetime.fromtimestamp(number, tz=UTC) if number and number > 0 else None


def line_price_id(line: Obj) -> str | None:
    """The Stripe price (or legacy plan) a line bills, in any API version."""
    details = _dict(_dict(line.get("pricing")).get("price_details"))
    for candidate in (details.get("price"), line.get("price"), line.get("plan")):
        if isinstance(candidate, str) and candidate:
            return candidate
        if isinstance(candidate, dict) and isinstance(candidate.get("id"), str):
            return str(candidate["id"])
    return None


def _line_taxes(line: Obj) -> list[Obj]:
    return _list(line.get("taxes")) or _list(line.get("tax_amounts"))


def _is_inclusive(tax: Obj) -> bool:
    return bool(tax.get("inclusive")) or tax.get("tax_behavior") == "inclusive"


def _tax_rate_percentage(tax: Obj) -> Decimal | None:
    """The rate when Stripe sent the tax rate expanded (it usually sends only its id)."""
    details = _dict(tax.get("tax_rate_details"))
    rate = _dict(tax.get("tax_rate")) or _dict(details.get("tax_rate"))
    for value in (rate.get("percentage"), details.get("percentage_decimal")):
        if value is not None:
            try:
                return Decimal(str(value))
            except ArithmeticError:
                continue
    return None


def _rate_bp(tax: int, amount_ht: int, expected_bp: int, percentage: Decimal | None) -> int:
    """The VAT rate in basis points behind `tax` on `amount_ht`.

    Stripe's tax lists name the rate by id only; the plan's rate is kept when it explains
    the tax to the cent, else the rate is derived from the amounts.
    """
    if percentage is not None:
        return int((percentage * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    if amount_ht == 0:
        return expected_bp if tax == 0 else 0
    if divide_rounded(amount_ht * expected_bp, 10_000) == tax:
        return expected_bp
    return divide_rounded(tax * 10_000, amount_ht)


def _base_line(line: Obj, position: int) -> tuple[str, int, int, datetime | None, datetime | None]:
    amount = _int(line.get("amount")) or 0
    quantity = _int(line.get("quantity")) or 1
    description = str(line.get("description") or "") or f"Ligne {position}"
    period = _dict(line.get("period"))
    return (
        description[:500],
        quantity,
        amount,
        _stamp(period.get("start")),
        _stamp(period.get("end")),
    )


def _allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` over `weights` in proportion, to the cent (largest remainders)."""
    weight_sum = sum(weights)
    if not weights:
        return []
    if weight_sum == 0:
        return [total, *([0] * (len(weights) - 1))]
    sign = -1 if total < 0 else 1
    magnitude = abs(total)
    shares = [magnitude * w // weight_sum for w in weights]
    remainders = sorted(
        range(len(weights)), key=lambda i: (magnitude * weights[i]) % weight_sum, reverse=True
    )
    for index in remainders[: magnitude - sum(shares)]:
        shares[index] += 1
    return [sign * share for share in shares]


def _invoice_level_tax(invoice: Obj) -> tuple[int, bool] | None:
    """Stripe's tax for the whole invoice and whether prices included it, when it says."""
    listed = _list(invoice.get("total_taxes")) or _list(invoice.get("total_tax_amounts"))
    if listed:
        return sum(_int(t.get("amount")) or 0 for t in listed), any(map(_is_inclusive, listed))
    if invoice.get("tax_percent") is not None:
        return _int(invoice.get("tax")) or 0, False
    return None


def stripe_reported_tax(invoice: Obj) -> int | None:
    """The VAT Stripe charged on the invoice, or None when Stripe computed none at all."""
    lines = _list(invoice.get("lines"))
    if any(_line_taxes(line) for line in lines):
        return sum(_int(t.get("amount")) or 0 for line in lines for t in _line_taxes(line))
    level = _invoice_level_tax(invoice)
    return level[0] if level else None


def lines_from_stripe_invoice(
    invoice: Obj,
    rate_for_price: Callable[[str | None], int],
    vat_exempt: bool,
    *,
    reverse_charge: bool = False,
) -> list[LineDraft]:
    """The invoice's lines with HT, TVA, TTC; they add up to Stripe's `total`.

    Under reverse charge (a business buyer in another EU member state, and Stripe charged
    no VAT) what was charged is the price before tax, and the lines carry category AE.
    """
    no_vat = vat_exempt or reverse_charge
    drafts = []
    for line in _lines_from_stripe_invoice(invoice, rate_for_price, no_vat):
        rate = 0 if no_vat and line.amount_tva == 0 else line.vat_rate_bp
        category = vat_category(
            rate, vat_exempt=vat_exempt, reverse_charge=reverse_charge and rate == 0
        )
        drafts.append(replace(line, vat_rate_bp=rate, vat_category=category))
    return drafts


def _lines_from_stripe_invoice(
    invoice: Obj, rate_for_price: Callable[[str | None], int], vat_exempt: bool
) -> list[LineDraft]:
    raw_lines = _list(invoice.get("lines"))
    drafts: list[LineDraft] = []
    any_line_taxes = any(_line_taxes(line) for line in raw_lines)
    invoice_tax = None if any_line_taxes else _invoice_level_tax(invoice)
    amounts = [_int(line.get("amount")) or 0 for line in raw_lines]
    spread = _allocate(invoice_tax[0], amounts) if invoice_tax else []
    for position, line in enumerate(raw_lines, start=1):
        description, quantity, amount, start, end = _base_line(line, position)
        expected = rate_for_price(line_price_id(line))
        percentage: Decimal | None = None
        taxable: int | None = None
        if any_line_taxes:
            taxes = _line_taxes(line)
            tax = sum(_int(t.get("amount")) or 0 for t in taxes)
            inclusive = any(map(_is_inclusive, taxes))
            percentage = _tax_rate_percentage(taxes[0]) if taxes else Decimal(0)
            # What Stripe taxed: the line after its discounts, before tax.
            taxable = _int(taxes[0].get("taxable_amount")) if taxes else None
        elif invoice_tax:
            tax, inclusive = spread[position - 1], invoice_tax[1]
            if invoice.get("tax_percent") is not None:
                percentage = Decimal(str(invoice["tax_percent"]))
        elif vat_exempt:
            tax, inclusive, percentage = 0, False, Decimal(0)
        else:  # prices include VAT at the plan's rate
            inclusive = True
            tax = amount - divide_rounded(amount * 10_000, 10_000 + expected)
        ht = amount - tax if inclusive else amount
        if taxable is not None:
            ht = taxable
        drafts.append(
            LineDraft(
                description=description,
                quantity=quantity,
                unit_price_ht=unit_price(ht, quantity),
                vat_rate_bp=_rate_bp(tax, ht, expected, percentage),
                amount_ht=ht,
                amount_tva=tax,
                amount_ttc=ht + tax,
                period_start=start,
                period_end=end,
            )
        )
    return _with_adjustment(invoice, drafts, rate_for_price(None), vat_exempt)


def _with_adjustment(
    invoice: Obj, drafts: list[LineDraft], default_bp: int, vat_exempt: bool
) -> list[LineDraft]:
    total = _int(invoice.get("total"))
    if total is None:
        total = _int(invoice.get("amount_paid")) or 0
    sums = totals_of(drafts)
    difference = total - sums.ttc
    if difference == 0:
        return drafts
    stripe_tax = _int(invoice.get("tax"))
    listed = _list(invoice.get("total_taxes")) or _list(invoice.get("total_tax_amounts"))
    if listed:
        stripe_tax = sum(_int(t.get("amount")) or 0 for t in listed)
    if stripe_tax is not None and (listed or invoice.get("tax_percent") is not None):
        tax = stripe_tax - sums.tva
    elif vat_exempt:
        tax = 0
    else:
        tax = difference - divide_rounded(difference * 10_000, 10_000 + default_bp)
    ht = difference - tax
    rate = _rate_bp(tax, ht, 0 if vat_exempt else default_bp, None)
    # An invoice Stripe sent without its lines still gets one line saying what it was for.
    label = ADJUSTMENT_LABEL if drafts else str(invoice.get("description") or SERVICE_LABEL)
    return [*drafts, LineDraft(label, 1, unit_price(ht, 1), rate, ht, tax, difference)]


def credit_note_lines(lines: Sequence[LineDraft], refunded: int) -> list[LineDraft]:
    """Negative lines crediting `refunded` cents (TTC) of an invoice with these lines.

    The amount is spread over the invoice's lines in proportion to their TTC, and each
    share keeps its line's VAT rate, so the VAT given back matches the VAT charged; a full
    refund mirrors the invoice exactly.
    """
    shares = _allocate(refunded, [line.amount_ttc for line in lines])
    credited: list[LineDraft] = []
    for line, share in zip(lines, shares, strict=True):
        if share == 0:
            continue
        if share == line.amount_ttc:
            tva, quantity = line.amount_tva, line.quantity
        else:
            tva, quantity = divide_rounded(share * line.amount_tva, line.amount_ttc), 1
        ht = share - tva
        credited.append(
            replace(
                line,
                quantity=quantity,
                unit_price_ht=unit_price(-ht, quantity),
                amount_ht=-ht,
                amount_tva=-tva,
                amount_ttc=-share,
            )
        )
    return credited
