"""The emails meterbill sends, in French (the default) and English.

Each template is a subject and a plain-text body with ``{name}`` fields; dates and money
are formatted for the reader's language before they are filled in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

LOCALES = ("fr", "en")
DEFAULT_LOCALE = "fr"

_MONTHS_FR = [
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
]
_MONTHS_EN = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_METRICS = {
    "fr": {"api_calls": "appels d'API", "tokens": "jetons"},
    "en": {"api_calls": "API calls", "tokens": "tokens"},
}


@dataclass(frozen=True)
class Template:
    subject: str
    body: str


TEMPLATES: dict[str, dict[str, Template]] = {
    "payment_failed": {
        "fr": Template(
            "Échec de votre paiement",
            "Bonjour,\n\n"
            "Le paiement de votre abonnement {plan} ({amount}) n'a pas abouti.\n"
            "{grace_line_fr}\n\n"
            "Mettez à jour votre moyen de paiement ici : {portal_url}\n\n"
            "Merci,\nL'équipe facturation\n",
        ),
        "en": Template(
            "Your payment failed",
            "Hello,\n\n"
            "The payment for your {plan} subscription ({amount}) did not go through.\n"
            "{grace_line_en}\n\n"
            "Update your payment method here: {portal_url}\n\n"
            "Thank you,\nThe billing team\n",
        ),
    },
    "grace_ended": {
        "fr": Template(
            "Votre abonnement {plan} est suspendu",
            "Bonjour,\n\n"
            "Le délai de grâce après l'échec de votre paiement a pris fin le {grace_end}.\n"
            "Votre compte est repassé au plan gratuit et ses limites s'appliquent désormais.\n\n"
            "Pour retrouver le plan {plan}, régularisez votre paiement : {portal_url}\n\n"
            "Merci,\nL'équipe facturation\n",
        ),
        "en": Template(
            "Your {plan} subscription is suspended",
            "Hello,\n\n"
            "The grace period after your failed payment ended on {grace_end}.\n"
            "Your account is back on the free plan and its limits now apply.\n\n"
            "To get the {plan} plan back, settle your payment: {portal_url}\n\n"
            "Thank you,\nThe billing team\n",
        ),
    },
    "quota_alert": {
        "fr": Template(
            "Vous avez utilisé {level} % de votre quota ({metric})",
            "Bonjour,\n\n"
            "Votre consommation ({metric}) pour {month} a atteint {level} % de la limite "
            "de votre plan.\n{quota_line_fr}\n\n"
            "Pour relever vos limites, changez de plan : {upgrade_url}\n\n"
            "Merci,\nL'équipe facturation\n",
        ),
        "en": Template(
            "You have used {level}% of your {metric} quota",
            "Hello,\n\n"
            "Your {metric} usage for {month} has reached {level}% of your plan's limit.\n"
            "{quota_line_en}\n\n"
            "To raise your limits, change plans: {upgrade_url}\n\n"
            "Thank you,\nThe billing team\n",
        ),
    },
    "invoice_issued": {
        "fr": Template(
            "Votre facture {invoice_number}",
            "Bonjour,\n\n"
            "Votre facture {invoice_number} du {issued_on}, d'un montant de {amount}, "
            "est disponible.\n{attachment_line_fr}\n\n"
            "Merci,\nL'équipe facturation\n",
        ),
        "en": Template(
            "Your invoice {invoice_number}",
            "Hello,\n\n"
            "Your invoice {invoice_number} of {issued_on}, for {amount}, is available.\n"
            "{attachment_line_en}\n\n"
            "Thank you,\nThe billing team\n",
        ),
    },
}


def format_date(value: datetime | None, locale: str) -> str:
    if value is None:
        return ""
    if locale == "en":
        return f"{_MONTHS_EN[value.month - 1]} {value.day}, {value.year}"
    return f"{value.day} {_MONTHS_FR[value.month - 1]} {value.year}"


def format_month(month: str, locale: str) -> str:
    """`2026-11` as `novembre 2026` / `November 2026`."""
    year, _, number = month.partition("-")
    names = _MONTHS_EN if locale == "en" else _MONTHS_FR
    try:
        return f"{names[int(number) - 1]} {year}"
    except (ValueError, IndexError):
        return month


def format_money(cents: int | None, currency: str | None, locale: str) -> str:
    if cents is None:
        return ""
    code = (currency or "eur").upper()
    symbol = {"EUR": "€", "USD": "$", "GBP": "£"}.get(code)
    units, rest = divmod(abs(cents), 100)
    sign = "-" if cents < 0 else ""
    if locale == "en":
        return (
            f"{sign}{symbol}{units:,}.{rest:02d}"
            if symbol
            else f"{sign}{units:,}.{rest:02d} {code}"
        )
    grouped = f"{units:,}".replace(",", "\u202f")
    return f"{sign}{grouped},{rest:02d} {symbol or code}"


def metric_label(metric: str, locale: str) -> str:
    return _METRICS.get(locale, _METRICS["fr"]).get(metric, metric)


def render(name: str, locale: str, fields: dict[str, Any]) -> tuple[str, str]:
    """The subject and body of template `name` in `locale` (French when unknown)."""
    template = TEMPLATES[name].get(locale) or TEMPLATES[name][DEFAULT_LOCALE]
    return template.subject.format(**fields), template.body.format(**fields)
