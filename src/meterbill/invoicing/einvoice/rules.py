"""The EN 16931 business rules that apply to meterbill's documents, checked in code before
any XML leaves: mandatory fields, totals (BR-CO-10 to BR-CO-16), the VAT breakdown per
category and rate (BR-S, BR-E, BR-AE, BR-Z) and the credit note's reference."""

from __future__ import annotations

from dataclasses import dataclass

from meterbill.errors import EinvoiceRejected
from meterbill.invoicing.amounts import divide_rounded
from meterbill.invoicing.einvoice.document import CREDIT_NOTE_TYPE, EDocument


@dataclass(frozen=True)
class Violation:
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.message}"


class BusinessRuleViolation(EinvoiceRejected):
    """A document that EN 16931 would reject; never sent out as an e-invoice."""

    def __init__(self, number: str, violations: list[Violation]) -> None:
        self.violations = violations
        super().__init__(rules=[str(v) for v in violations])
        self.args = (f"{number}: " + "; ".join(map(str, violations)),)


def _mandatory(doc: EDocument) -> list[Violation]:
    checks = [
        ("BR-02", bool(doc.number), "the document has a number"),
        ("BR-05", len(doc.currency) == 3, "the currency is an ISO 4217 code"),
        ("BR-06", bool(doc.seller.name), "the seller has a name"),
        ("BR-07", bool(doc.buyer.name), "the buyer has a name"),
        ("BR-09", len(doc.seller.country) == 2, "the seller's country is known"),
        ("BR-11", len(doc.buyer.country) == 2, "the buyer's country is known"),
        ("BR-16", bool(doc.lines), "the document has at least one line"),
        (
            "BR-CO-26",
            bool(doc.seller.vat_number or doc.seller.siren),
            "the seller has a VAT number or a legal registration id",
        ),
        (
            "BR-FR-CN",
            doc.type_code != CREDIT_NOTE_TYPE or bool(doc.preceding_number),
            "a credit note names the invoice it corrects",
        ),
    ]
    found = [Violation(rule, message) for rule, ok, message in checks if not ok]
    for line in doc.lines:
        if not line.description:
            found.append(Violation("BR-25", f"line {line.position} has an item name"))
        if line.unit_price < 0:
            found.append(Violation("BR-27", f"line {line.position}: price is not negative"))
    return found


def _totals(doc: EDocument) -> list[Violation]:
    found = []
    if doc.line_total != sum(line.net_amount for line in doc.lines):
        found.append(Violation("BR-CO-10", "sum of line net amounts = line total"))
    if doc.tax_basis_total != doc.line_total:  # no document-level allowances or charges
        found.append(Violation("BR-CO-13", "tax basis total = line total"))
    if doc.tax_total != sum(group.amount for group in doc.vat):
        found.append(Violation("BR-CO-14", "tax total = sum of VAT category amounts"))
    if doc.grand_total != doc.tax_basis_total + doc.tax_total:
        found.append(Violation("BR-CO-15", "grand total = tax basis total + tax total"))
    if doc.due != doc.grand_total - doc.prepaid:
        found.append(Violation("BR-CO-16", "amount due = grand total - paid amount"))
    return found


def _breakdown(doc: EDocument) -> list[Violation]:
    found = []
    for group in doc.vat:
        label = f"category {group.category} at {group.rate_bp / 100:g} %"
        members = [
            line
            for line in doc.lines
            if (line.vat_category, line.vat_rate_bp) == (group.category, group.rate_bp)
        ]
        if group.basis != sum(line.net_amount for line in members):
            found.append(Violation(f"BR-{group.category}-08", f"{label}: basis = sum of lines"))
        if group.category in ("E", "AE", "Z"):
            if group.amount != 0 or group.rate_bp != 0:
                found.append(Violation(f"BR-{group.category}-09", f"{label}: no VAT"))
        else:
            # Stripe taxes (and prices including VAT) round per line: one cent per line.
            expected = divide_rounded(group.basis * group.rate_bp, 10_000)
            if abs(group.amount - expected) > group.line_count:
                found.append(Violation("BR-CO-17", f"{label}: VAT = basis x rate"))
        if group.category in ("E", "AE") and not (group.exemption_reason or group.exemption_code):
            found.append(Violation(f"BR-{group.category}-10", f"{label}: exemption reason"))
        if group.category == "AE" and not (doc.seller.vat_number and doc.buyer.vat_number):
            found.append(Violation("BR-AE-02", "reverse charge names both VAT numbers"))
        if group.category == "S" and not doc.seller.vat_number:
            found.append(Violation("BR-S-02", "standard rated VAT needs the seller's VAT number"))
    return found


def check_business_rules(doc: EDocument) -> list[Violation]:
    """Every rule the document breaks; empty when EN 16931 accepts it."""
    return [*_mandatory(doc), *_totals(doc), *_breakdown(doc)]


def ensure_business_rules(doc: EDocument) -> None:
    violations = check_business_rules(doc)
    if violations:
        raise BusinessRuleViolation(doc.number, violations)
