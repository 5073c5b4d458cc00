"""The end-user billing page's words in French (the default) and English."""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request

from meterbill.app import preferred_language
from meterbill.notify import templates as formats

MESSAGES: dict[str, dict[str, str]] = {
    "title": {"fr": "Facturation", "en": "Billing"},
    "plan": {"fr": "Plan", "en": "Plan"},
    "status": {"fr": "Statut", "en": "Status"},
    "status.active": {"fr": "actif", "en": "active"},
    "status.trialing": {"fr": "essai", "en": "trial"},
    "status.past_due": {"fr": "paiement en retard", "en": "payment past due"},
    "status.unpaid": {"fr": "impayé", "en": "unpaid"},
    "status.incomplete": {"fr": "incomplet", "en": "incomplete"},
    "status.canceled": {"fr": "résilié", "en": "canceled"},
    "grace": {
        "fr": "Mettez à jour votre moyen de paiement avant le {date} pour garder votre plan.",
        "en": "Update your payment method before {date} to keep your plan.",
    },
    "renews": {"fr": "Période en cours jusqu'au {date}", "en": "Current period ends {date}"},
    "usage": {"fr": "Consommation de {month}", "en": "Usage in {month}"},
    "of": {"fr": "sur", "en": "of"},
    "unlimited": {"fr": "illimité", "en": "unlimited"},
    "state.ok": {"fr": "dans la limite", "en": "within limit"},
    "state.soft": {"fr": "proche de la limite", "en": "near the limit"},
    "state.hard": {"fr": "limite atteinte", "en": "limit reached"},
    "change_plan": {"fr": "Changer de plan", "en": "Change plan"},
    "plan_changed": {
        "fr": "Votre changement de plan est enregistré.",
        "en": "Your plan change is recorded.",
    },
    "pending": {"fr": "Passage au plan {plan} le {date}", "en": "Moves to {plan} on {date}"},
    "choose": {"fr": "Choisir", "en": "Choose"},
    "current": {"fr": "plan actuel", "en": "current plan"},
    "payment": {"fr": "Paiement", "en": "Payment"},
    "manage_payment": {
        "fr": "Gérer le moyen de paiement et l'abonnement",
        "en": "Manage payment method and subscription",
    },
    "no_customer": {
        "fr": "Vous n'avez pas encore de moyen de paiement : choisissez un plan payant.",
        "en": "You have no payment method yet: choose a paid plan.",
    },
    "documents": {"fr": "Factures et avoirs", "en": "Invoices and credit notes"},
    "no_documents": {"fr": "Aucune facture pour l'instant.", "en": "No invoices yet."},
    "number": {"fr": "Numéro", "en": "Number"},
    "date": {"fr": "Date", "en": "Date"},
    "amount": {"fr": "Montant TTC", "en": "Amount incl. VAT"},
    "kind.invoice": {"fr": "facture", "en": "invoice"},
    "kind.credit_note": {"fr": "avoir", "en": "credit note"},
    "download": {"fr": "Télécharger le PDF", "en": "Download PDF"},
    "link_invalid.title": {"fr": "Lien expiré ou invalide", "en": "Link expired or invalid"},
    "link_invalid.body": {
        "fr": "Ce lien vers votre page de facturation n'est plus valable. Revenez sur "
        "l'application et ouvrez à nouveau la page de facturation.",
        "en": "This link to your billing page is no longer valid. Go back to the app and "
        "open the billing page again.",
    },
    "error.title": {"fr": "Action impossible", "en": "Action not possible"},
    "back": {"fr": "Retour à la facturation", "en": "Back to billing"},
    "language": {"fr": "English", "en": "Français"},
    "expires": {"fr": "Lien valable jusqu'à {time} UTC", "en": "Link valid until {time} UTC"},
}


def translate(language: str, key: str, **values: object) -> str:
    entry = MESSAGES.get(key)
    text = entry.get(language, entry["fr"]) if entry else key
    return text.format(**values) if values else text


def page_language(request: Request, link_language: str | None) -> str:
    """`?lang=` first, then the link's language, then Accept-Language."""
    asked = request.query_params.get("lang")
    if asked in ("fr", "en"):
        return asked
    return link_language or preferred_language(request)


def format_date(language: str, value: datetime | None) -> str:
    return formats.format_date(value, language) if value else "—"


def format_month(language: str, month: str) -> str:
    return formats.format_month(month, language)


def format_money(language: str, cents: int, currency: str) -> str:
    return formats.format_money(cents, currency, language)


def format_number(language: str, value: int) -> str:
    grouped = f"{value:,}"
    return grouped.replace(",", "\u202f") if language == "fr" else grouped


def format_percent(language: str, value: float) -> str:
    text = f"{value:.1f}"
    return f"{text.replace('.', ',')}\u00a0%" if language == "fr" else f"{text} %"


def metric_label(language: str, metric: str) -> str:
    label = formats.metric_label(metric, language)
    return label[:1].upper() + label[1:]
