"""Settings (environment and `.env`) and the plan catalog."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///meterbill.db"
BUILTIN_METRICS = ("api_calls", "tokens")
PAID_PLANS = ("premium", "pro")

Aggregation = Literal["sum", "count", "max"]
LimitAction = Literal["block", "allow"]


class Settings(BaseSettings):
    """Everything meterbill reads from its environment, read once and passed down."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    database_url: str = Field(DEFAULT_DATABASE_URL, alias="METERBILL_DATABASE_URL")

    stripe_secret_key: str = Field("", alias="STRIPE_SECRET_KEY")
    stripe_publishable_key: str = Field("", alias="STRIPE_PUBLISHABLE_KEY")
    stripe_webhook_secret: str = Field("", alias="STRIPE_WEBHOOK_SECRET")
    stripe_price_premium: str | None = Field(None, alias="STRIPE_PRICE_PREMIUM")
    stripe_price_pro: str | None = Field(None, alias="STRIPE_PRICE_PRO")
    stripe_api_base: str = Field("https://api.stripe.com", alias="STRIPE_API_BASE")
    stripe_timeout_seconds: float = Field(10.0, alias="METERBILL_STRIPE_TIMEOUT", gt=0)
    stripe_max_retries: int = Field(2, alias="METERBILL_STRIPE_MAX_RETRIES", ge=0)
    insecure_webhooks: bool = Field(False, alias="METERBILL_INSECURE_WEBHOOKS")
    app_base_url: str = Field("http://localhost:8793", alias="APP_BASE_URL")

    jwt_secret: str = Field("", alias="METERBILL_JWT_SECRET")
    jwt_public_key: str = Field("", alias="METERBILL_JWT_PUBLIC_KEY")
    jwt_audience: str | None = Field(None, alias="METERBILL_JWT_AUDIENCE")
    jwt_issuer: str | None = Field(None, alias="METERBILL_JWT_ISSUER")

    grace_days: int = Field(3, alias="BILLING_GRACE_DAYS", ge=0)
    plans_file: Path | None = Field(None, alias="METERBILL_PLANS_FILE")

    # Invoicing: where PDFs go, and the seller's identity printed on every invoice.
    invoice_dir: Path = Field(Path("var/invoices"), alias="METERBILL_INVOICE_DIR")
    seller_name: str = Field("", alias="METERBILL_SELLER_NAME")
    seller_address: str = Field("", alias="METERBILL_SELLER_ADDRESS")  # lines split by \n or ;
    seller_email: str = Field("", alias="METERBILL_SELLER_EMAIL")
    seller_siren: str = Field("", alias="METERBILL_SELLER_SIREN")
    seller_siret: str = Field("", alias="METERBILL_SELLER_SIRET")
    seller_vat_number: str = Field("", alias="METERBILL_SELLER_VAT_NUMBER")
    seller_legal_form: str = Field("", alias="METERBILL_SELLER_LEGAL_FORM")  # SAS au capital…
    seller_rcs: str = Field("", alias="METERBILL_SELLER_RCS")  # RCS Paris 123 456 789
    seller_vat_exempt: bool = Field(False, alias="METERBILL_SELLER_VAT_EXEMPT")  # art. 293 B
    seller_late_payment_terms: str = Field(
        "En cas de retard de paiement : pénalités au taux égal à trois fois le taux d'intérêt "
        "légal, et indemnité forfaitaire pour frais de recouvrement de 40 € "
        "(art. L441-10 et D441-5 du Code de commerce). Pas d'escompte pour paiement anticipé.",
        alias="METERBILL_SELLER_LATE_PAYMENT_TERMS",
    )
    seller_legal_mentions: str = Field("", alias="METERBILL_SELLER_LEGAL_MENTIONS")
    # Where the seller lives: issue dates, service periods and numbering months follow it.
    seller_timezone: str = Field("Europe/Paris", alias="METERBILL_SELLER_TIMEZONE")
    seller_country: str = Field("FR", alias="METERBILL_SELLER_COUNTRY")  # ISO 3166 alpha-2
    # The accountant's export (FEC): chart of accounts and journals.
    fec_account_customers: str = Field("411000", alias="METERBILL_FEC_ACCOUNT_CUSTOMERS")
    fec_account_revenue: str = Field("706000", alias="METERBILL_FEC_ACCOUNT_REVENUE")
    fec_account_vat: str = Field("445710", alias="METERBILL_FEC_ACCOUNT_VAT")
    fec_account_bank: str = Field("512000", alias="METERBILL_FEC_ACCOUNT_BANK")
    fec_journal_sales: str = Field("VE", alias="METERBILL_FEC_JOURNAL_SALES")
    fec_journal_bank: str = Field("BQ", alias="METERBILL_FEC_JOURNAL_BANK")

    limit_free_api_calls: int | None = Field(None, alias="BILLING_LIMIT_FREE_API_CALLS")
    limit_free_tokens: int | None = Field(None, alias="BILLING_LIMIT_FREE_TOKENS")
    limit_premium_api_calls: int | None = Field(None, alias="BILLING_LIMIT_PREMIUM_API_CALLS")
    limit_premium_tokens: int | None = Field(None, alias="BILLING_LIMIT_PREMIUM_TOKENS")
    limit_pro_api_calls: int | None = Field(None, alias="BILLING_LIMIT_PRO_API_CALLS")
    limit_pro_tokens: int | None = Field(None, alias="BILLING_LIMIT_PRO_TOKENS")

    log_level: str = Field("INFO", alias="METERBILL_LOG_LEVEL")

    # Request body caps in bytes (meterbill.request_limits): every route's, and per path
    # as JSON ({"/api/v1/usage/events": 16777216}) over the built-in ones.
    max_body_bytes: int = Field(64 * 1024, alias="METERBILL_MAX_BODY_BYTES", gt=0)
    body_limits: dict[str, int] = Field(default_factory=dict, alias="METERBILL_BODY_LIMITS")

    # Background work (meterbill.jobs, meterbill.notify).
    smtp_url: str = Field("", alias="METERBILL_SMTP_URL")
    email_from: str = Field("meterbill <billing@localhost>", alias="METERBILL_EMAIL_FROM")
    portal_url: str | None = Field(None, alias="METERBILL_PORTAL_URL")
    webhook_urls: str = Field("", alias="METERBILL_WEBHOOK_URLS")
    webhook_secret: str = Field("", alias="METERBILL_WEBHOOK_SECRET")
    webhook_timeout_seconds: float = Field(10.0, alias="METERBILL_WEBHOOK_TIMEOUT", gt=0)
    job_lease_seconds: float = Field(120.0, alias="METERBILL_JOB_LEASE_SECONDS", gt=0)
    worker_poll_seconds: float = Field(1.0, alias="METERBILL_WORKER_POLL_SECONDS", gt=0)
    reconcile_stale_days: int = Field(7, alias="METERBILL_RECONCILE_STALE_DAYS", ge=0)
    event_retention_days: int = Field(180, alias="METERBILL_EVENT_RETENTION_DAYS", ge=1)
    job_retention_days: int = Field(30, alias="METERBILL_JOB_RETENTION_DAYS", ge=1)

    # Operator console (/admin) and end-user billing page (meterbill.console).
    secret_key: str = Field("", alias="METERBILL_SECRET_KEY")  # signs billing-page links
    public_url: str = Field("", alias="METERBILL_PUBLIC_URL")  # meterbill's own address
    billing_link_minutes: int = Field(15, alias="METERBILL_BILLING_LINK_MINUTES", ge=1, le=10080)
    admin_session_hours: float = Field(12.0, alias="METERBILL_ADMIN_SESSION_HOURS", gt=0)
    admin_max_failures: int = Field(5, alias="METERBILL_ADMIN_MAX_FAILURES", ge=1)
    admin_lockout_minutes: float = Field(15.0, alias="METERBILL_ADMIN_LOCKOUT_MINUTES", gt=0)
    admin_proxy_header: str = Field("", alias="METERBILL_ADMIN_PROXY_HEADER")  # off when empty
    admin_trusted_proxies: str = Field("127.0.0.1,::1", alias="METERBILL_ADMIN_TRUSTED_PROXIES")

    def webhook_targets(self) -> list[str]:
        """The SaaS backend URLs that receive meterbill's own webhooks."""
        return [url.strip() for url in self.webhook_urls.split(",") if url.strip()]

    def portal_link(self) -> str:
        """Where an email sends a user to fix their payment method (the SaaS's page that
        opens the Stripe portal)."""
        return self.portal_url or f"{self.app_base_url.rstrip('/')}/billing/portal"

    def catalog(self) -> Catalog:
        """The plan catalog: built-in plans, then the plans file, then env overrides."""
        return load_catalog(self)


@dataclass(frozen=True)
class Meter:
    """A metric users consume, and how its events add up over a month."""

    name: str
    aggregation: Aggregation = "sum"


@dataclass(frozen=True)
class Plan:
    name: str
    stripe_price: str | None = None
    limits: dict[str, int] = field(default_factory=dict)
    alert_ratio: float = 0.8
    on_limit: LimitAction = "block"
    vat_rate_bp: int = 2000  # basis points: 2000 = 20.00 %

    def limit(self, metric: str) -> int:
        return self.limits.get(metric, 0)


@dataclass(frozen=True)
class Catalog:
    plans: dict[str, Plan]
    meters: dict[str, Meter]

    def plan(self, name: str) -> Plan:
        return self.plans.get(name) or self.plans["free"]

    def plan_for_price(self, price_id: str | None) -> Plan | None:
        """The paid plan sold at this Stripe price, or None when the price is unknown."""
        if not price_id:
            return None
        for plan in self.plans.values():
            if plan.stripe_price and plan.stripe_price == price_id and plan.name != "free":
                return plan
        return None


_SEED_LIMITS: dict[str, dict[str, int]] = {
    "free": {"api_calls": 300, "tokens": 100_000},
    "premium": {"api_calls": 3_000, "tokens": 1_000_000},
    "pro": {"api_calls": 30_000, "tokens": 10_000_000},
}


def load_catalog(settings: Settings) -> Catalog:
    raw: dict[str, dict[str, object]] = {}
    meters = {name: Meter(name) for name in BUILTIN_METRICS}
    if settings.plans_file:
        document = tomllib.loads(Path(settings.plans_file).read_text(encoding="utf-8"))
        for name, spec in document.get("meters", {}).items():
            meters[name] = Meter(name, spec.get("aggregation", "sum"))
        raw = document.get("plans", {})

    plans: dict[str, Plan] = {}
    for name in {*_SEED_LIMITS, *raw}:
        spec = raw.get(name, {})
        limits = dict(_SEED_LIMITS.get(name, {}))
        limits.update({k: int(v) for k, v in dict(spec.get("limits", {})).items()})  # type: ignore[call-overload]
        for metric in BUILTIN_METRICS:
            override = getattr(settings, f"limit_{name}_{metric}", None)
            if override is not None:
                limits[metric] = override
        price = spec.get("stripe_price")
        env_price = getattr(settings, f"stripe_price_{name}", None)
        plans[name] = Plan(
            name=name,
            stripe_price=env_price or (str(price) if price else None),
            limits=limits,
            alert_ratio=float(spec.get("alert_ratio", 0.8)),  # type: ignore[arg-type]
            on_limit="allow" if spec.get("on_limit") == "allow" else "block",
            vat_rate_bp=round(float(spec.get("vat_rate", 20.0)) * 100),  # type: ignore[arg-type]
        )
    return Catalog(plans=plans, meters=meters)
