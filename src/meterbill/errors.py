"""meterbill's own exceptions: each carries a stable code, an HTTP status, and its message
in French (the seed's language, the default) and English."""

from __future__ import annotations

from typing import Any


class MeterbillError(Exception):
    status = 400
    code = "bad_request"
    message_fr = "Requête invalide"
    message_en = "Bad request"

    def __init__(
        self,
        message_fr: str | None = None,
        message_en: str | None = None,
        **details: Any,
    ) -> None:
        self.message_fr = message_fr or type(self).message_fr
        self.message_en = message_en or type(self).message_en
        self.details = details
        super().__init__(self.message_en)

    def message(self, language: str) -> str:
        return self.message_en if language == "en" else self.message_fr


class Unauthorized(MeterbillError):
    status = 401
    code = "unauthorized"
    message_fr = "Authentification requise"
    message_en = "Authentication required"


class InvalidToken(Unauthorized):
    code = "invalid_token"
    message_fr = "Jeton invalide ou expiré"
    message_en = "Invalid or expired token"


class InvalidApiKey(Unauthorized):
    code = "invalid_api_key"
    message_fr = "Clé d'API invalide"
    message_en = "Invalid API key"


class InsufficientScope(MeterbillError):
    """The API key is valid but lacks the scope this endpoint needs."""

    status = 403
    code = "insufficient_scope"
    message_fr = "Cette clé d'API n'a pas le droit {scope}"
    message_en = "This API key lacks the {scope} scope"

    def __init__(self, scope: str) -> None:
        super().__init__(
            f"Cette clé d'API n'a pas le droit {scope}", f"This API key lacks the {scope} scope"
        )


class AuthUnavailable(MeterbillError):
    """The identity provider's keys (METERBILL_JWT_JWKS_URL) could not be fetched."""

    status = 503
    code = "auth_unavailable"
    message_fr = "Clés du fournisseur d'identité injoignables"
    message_en = "The identity provider's keys cannot be fetched"


class AuthNotConfigured(MeterbillError):
    status = 503
    code = "auth_not_configured"
    message_fr = "Authentification non configurée"
    message_en = "Authentication is not configured"


class InvalidPlan(MeterbillError):
    code = "invalid_plan"
    message_fr = "Plan invalide. Choisir 'premium' ou 'pro'"
    message_en = "Invalid plan. Choose 'premium' or 'pro'"


class AlreadyOnPlan(MeterbillError):
    code = "already_on_plan"
    message_fr = "Vous êtes déjà sur le plan {plan}"
    message_en = "You are already on the {plan} plan"

    def __init__(self, plan: str) -> None:
        super().__init__(
            f"Vous êtes déjà sur le plan {plan}", f"You are already on the {plan} plan"
        )


class NoStripeCustomer(MeterbillError):
    code = "no_stripe_customer"
    message_fr = "Aucun abonnement Stripe trouvé. Souscrivez d'abord à un plan payant."
    message_en = "No Stripe subscription found. Subscribe to a paid plan first."


class StripeNotConfigured(MeterbillError):
    status = 503
    code = "stripe_not_configured"
    message_fr = "Stripe non configuré"
    message_en = "Stripe is not configured"


class PriceNotConfigured(MeterbillError):
    status = 503
    code = "price_not_configured"
    message_fr = "Prix Stripe non configuré pour le plan {plan}"
    message_en = "No Stripe price is configured for the {plan} plan"

    def __init__(self, plan: str) -> None:
        super().__init__(
            f"Prix Stripe non configuré pour le plan {plan}",
            f"No Stripe price is configured for the {plan} plan",
        )


class StripeUnavailable(MeterbillError):
    """Stripe failed, timed out or refused; its own text never reaches the client."""

    status = 503
    code = "stripe_unavailable"
    message_fr = "Erreur Stripe"
    message_en = "Stripe error"


class InvalidMonth(MeterbillError):
    status = 422
    code = "invalid_month"
    message_fr = "Format mois invalide. Utiliser YYYY-MM"
    message_en = "Invalid month format. Use YYYY-MM"


class InvoiceNotFound(MeterbillError):
    """No such invoice for this user (another user's number is not found either)."""

    status = 404
    code = "invoice_not_found"
    message_fr = "Facture introuvable"
    message_en = "Invoice not found"


class EinvoiceRejected(MeterbillError):
    """The document breaks EN 16931 rules (one issued before its seller was complete):
    no e-invoice is served for it; `meterbill invoices audit` names it."""

    status = 409
    code = "einvoice_rules_broken"
    message_fr = "Ce document ne respecte pas la norme EN 16931"
    message_en = "This document breaks the EN 16931 rules"


class PdfRenderingFailed(MeterbillError):
    """The process rendering PDFs died during this document (killed, out of memory) or
    took longer than METERBILL_PDF_RENDER_TIMEOUT_SECONDS (it is killed): the next request
    renders it in a new one."""

    status = 503
    code = "pdf_rendering_failed"
    message_fr = "Le PDF n'a pas pu être produit, réessayez"
    message_en = "The PDF could not be rendered; try again"


class WebhookNotConfigured(MeterbillError):
    status = 503
    code = "webhook_not_configured"
    message_fr = "Secret du webhook Stripe non configuré"
    message_en = "Stripe webhook secret is not configured"


class InvalidSignature(MeterbillError):
    code = "invalid_signature"
    message_fr = "Signature invalide"
    message_en = "Invalid signature"


class InvalidPayload(MeterbillError):
    code = "invalid_payload"
    message_fr = "Payload invalide"
    message_en = "Invalid payload"


class NotFound(MeterbillError):
    status = 404
    code = "not_found"
    message_fr = "Ressource introuvable"
    message_en = "Not found"


class WebhookFailed(MeterbillError):
    """Applying an event failed; everything was rolled back and Stripe will retry."""

    status = 500
    code = "webhook_failed"
    message_fr = "Erreur interne"
    message_en = "Internal error"


# -- Plan changes (billing.plans): a paying user changes plan through the subscription they
# already have, never through a second Checkout.

PLAN_ENDPOINT = "/api/v1/billing/plan"
CHECKOUT_ENDPOINT = "/api/v1/billing/checkout"


class PlanChangeRequired(MeterbillError):
    """Checkout for another plan while a paid subscription is live: a second subscription
    would be billed beside the first."""

    status = 409
    code = "plan_change_required"
    message_fr = (
        "Vous avez déjà un abonnement payant : changez de plan avec POST /api/v1/billing/plan"
    )
    message_en = "You already have a paid subscription: change plan with POST /api/v1/billing/plan"

    def __init__(self) -> None:
        super().__init__(body={"details": {"method": "POST", "endpoint": PLAN_ENDPOINT}})


class SettlementRequired(MeterbillError):
    """The grace period is over but the old subscription still asks Stripe for payment."""

    status = 409
    code = "settle_or_cancel_required"
    message_fr = (
        "Votre abonnement précédent est impayé : réglez-le (portail) ou résiliez-le "
        "avant de souscrire à nouveau"
    )
    message_en = (
        "Your previous subscription is unpaid: settle it (portal) or cancel it "
        "before subscribing again"
    )

    def __init__(self) -> None:
        super().__init__(
            body={
                "details": {
                    "portal": "/api/v1/billing/portal",
                    "cancel": "/api/v1/billing/cancel",
                }
            }
        )


PORTAL_ENDPOINT = "/api/v1/billing/portal"
STATUS_ENDPOINT = "/api/v1/billing/status"


class CheckoutAlreadyCompleted(MeterbillError):
    """A Checkout Session of this user was paid while another was asked for: the
    subscription it made is being recorded, and a second one would be billed beside it."""

    status = 409
    code = "checkout_already_completed"
    message_fr = (
        "Un paiement vient d'aboutir pour ce compte : votre abonnement est en cours "
        "d'activation (GET /api/v1/billing/status)"
    )
    message_en = (
        "A checkout of this account was just paid: your subscription is being activated "
        "(GET /api/v1/billing/status)"
    )

    def __init__(self) -> None:
        super().__init__(body={"details": {"method": "GET", "endpoint": STATUS_ENDPOINT}})


class CheckoutSuperseded(MeterbillError):
    """Two checkouts of one user for different plans raced; the newer session was kept and
    this request's session expired, so that only one can be paid."""

    status = 409
    code = "checkout_superseded"
    message_fr = (
        "Un autre paiement a été ouvert au même moment pour ce compte : le vôtre est annulé, "
        "réessayez"
    )
    message_en = (
        "Another checkout was opened for this account at the same moment: yours was "
        "canceled, try again"
    )


class SubscriptionPaymentPending(MeterbillError):
    """The first payment of a subscription is still awaited (`incomplete`, Stripe's 23-hour
    window): paying it would start that subscription, so no second one is sold meanwhile."""

    status = 409
    code = "subscription_payment_pending"
    message_fr = (
        "Le premier paiement de votre abonnement est en attente : finalisez-le depuis le "
        "portail (POST /api/v1/billing/portal) ou réessayez après {until}"
    )
    message_en = (
        "The first payment of your subscription is pending: complete it from the portal "
        "(POST /api/v1/billing/portal) or try again after {until}"
    )

    def __init__(self, until: str) -> None:
        super().__init__(
            type(self).message_fr.replace("{until}", until),
            type(self).message_en.replace("{until}", until),
            body={"details": {"portal": PORTAL_ENDPOINT, "retry_after": until}},
        )


class SubscriptionPaused(MeterbillError):
    """The user's subscription is paused (e.g. a trial ended without a payment method):
    it is resumed through the portal, not replaced by a second one."""

    status = 409
    code = "subscription_paused"
    message_fr = (
        "Votre abonnement est en pause : reprenez-le depuis le portail "
        "(POST /api/v1/billing/portal)"
    )
    message_en = (
        "Your subscription is paused: resume it from the portal (POST /api/v1/billing/portal)"
    )

    def __init__(self) -> None:
        super().__init__(body={"details": {"method": "POST", "endpoint": PORTAL_ENDPOINT}})


class NoPaidSubscription(MeterbillError):
    status = 409
    code = "no_paid_subscription"
    message_fr = "Aucun abonnement payant en cours : souscrivez avec POST /api/v1/billing/checkout"
    message_en = "No paid subscription: subscribe with POST /api/v1/billing/checkout"

    def __init__(self) -> None:
        super().__init__(body={"details": {"method": "POST", "endpoint": CHECKOUT_ENDPOINT}})


class PlanChangePaymentFailed(MeterbillError):
    """Stripe kept the upgrade pending: its prorated invoice is not paid, the plan is unchanged."""

    status = 402
    code = "plan_change_payment_failed"
    message_fr = (
        "Le paiement du changement de plan a échoué : votre plan est inchangé. "
        "Réglez la facture depuis le portail de paiement."
    )
    message_en = (
        "The payment for the plan change failed: your plan is unchanged. "
        "Pay the invoice from the billing portal."
    )


class PayloadTooLarge(MeterbillError):
    """The request body is longer than its route accepts; it was not read past the cap."""

    status = 413
    code = "payload_too_large"
    message_fr = "Requête trop volumineuse : au plus {max_bytes} octets"
    message_en = "Request body too large: at most {max_bytes} bytes"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            f"Requête trop volumineuse : au plus {max_bytes} octets",
            f"Request body too large: at most {max_bytes} bytes",
            body={"details": {"max_bytes": max_bytes}},
        )


class NotADemoDatabase(MeterbillError):
    """`meterbill demo` was pointed at a database that holds real users or invoices."""

    status = 409
    code = "not_a_demo_database"
    message_fr = (
        "Cette base contient de vrais utilisateurs ou factures : la démo ne s'installe que "
        "dans une base vide ou qu'elle a créée (METERBILL_DATABASE_URL)"
    )
    message_en = (
        "This database holds real users or invoices: the demo only loads into an empty "
        "database or one it made (METERBILL_DATABASE_URL)"
    )


class AdminExists(MeterbillError):
    status = 409
    code = "admin_exists"
    message_fr = "Un opérateur existe déjà avec cette adresse"
    message_en = "An operator with this email already exists"


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"
    message_fr = "Adresse ou mot de passe incorrect"
    message_en = "Wrong email or password"


class AccountLocked(MeterbillError):
    status = 429
    code = "account_locked"
    message_fr = "Trop d'essais : compte verrouillé pour un moment"
    message_en = "Too many attempts: the account is locked for a while"

    def __init__(self, until: Any) -> None:
        super().__init__(until=until)
        self.until = until


class InvalidBillingLink(MeterbillError):
    """A billing-page link that is malformed, tampered with, or past its expiry."""

    status = 403
    code = "invalid_billing_link"
    message_fr = "Ce lien a expiré ou n'est pas valide"
    message_en = "This link has expired or is not valid"
