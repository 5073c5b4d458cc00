"""Settings (environment and `.env`) and the plan catalog."""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///meterbill.db"  # the seed's; now under meterbill_home()
BUILTIN_METRICS = ("api_calls", "tokens")
PAID_PLANS = ("premium", "pro")

Aggregation = Literal["sum", "count", "max"]
LimitAction = Literal["block", "allow"]


def meterbill_home() -> Path:
    """Where meterbill keeps its data by default: `METERBILL_HOME`, else the user's data
    directory (`$XDG_DATA_HOME/meterbill`, `~/.local/share/meterbill`; on macOS
    `~/Library/Application Support/meterbill`). Never the current directory, silently."""
    explicit = os.environ.get("METERBILL_HOME", "").strip()
    if explicit:
        return Path(explicit).expanduser().resolve()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "meterbill"
    base = os.environ.get("XDG_DATA_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".local" / "share") / "meterbill"


def env_files() -> tuple[Path, ...]:
    """The `.env` files read, in order (a later one wins): the home's, then the current
    directory's."""
    return (meterbill_home() / ".env", Path(".env"))


def _default_database_url() -> str:
    return f"sqlite:///{meterbill_home() / 'meterbill.db'}"


def _default_invoice_dir() -> Path:
    return meterbill_home() / "invoices"


class Settings(BaseSettings):
    """Everything meterbill reads from its environment, read once and passed down."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    def __init__(self, **values: Any) -> None:
        # The `.env` files depend on METERBILL_HOME at the time of the call, not of import.
        values.setdefault("_env_file", env_files())
        super().__init__(**values)

    database_url: str = Field(default_factory=_default_database_url, alias="METERBILL_DATABASE_URL")

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
    jwt_jwks_url: str = Field("", alias="METERBILL_JWT_JWKS_URL")
    # An unknown `kid` fetches the JWKS again at most once per this many seconds.
    jwt_jwks_cooldown_seconds: float = Field(30.0, alias="METERBILL_JWT_JWKS_COOLDOWN", ge=0)
    jwt_user_claim: str = Field("sub", alias="METERBILL_JWT_USER_CLAIM", min_length=1)

    grace_days: int = Field(3, alias="BILLING_GRACE_DAYS", ge=0)
    plans_file: Path | None = Field(None, alias="METERBILL_PLANS_FILE")

    # Invoicing: where PDFs go, and the seller's identity printed on every invoice.
    invoice_dir: Path = Field(default_factory=_default_invoice_dir, alias="METERBILL_INVOICE_DIR")
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
    # PDFs are rendered in a child process replaced after this many documents
    # (meterbill.invoicing.renderer: WeasyPrint keeps memory per document rendered).
    pdf_documents_per_child: int = Field(50, alias="METERBILL_PDF_DOCUMENTS_PER_CHILD", ge=1)
    # A render that takes longer fails (503 on a download, a retry for a job) and its child
    # is killed: a hung WeasyPrint does not hold the renderer forever.
    pdf_render_timeout_seconds: int = Field(60, alias="METERBILL_PDF_RENDER_TIMEOUT_SECONDS", ge=1)
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

    def limit(self, metric: str) -> int | None:
        """The monthly limit of `metric`, or None when the plan sets none (unlimited)."""
        return self.limits.get(metric)


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


class PlansFileError(ValueError):
    """The plans file cannot be used; the message names the file, the key and the reason."""

    def __init__(self, path: Path, key: str, reason: str) -> None:
        self.path, self.key, self.reason = path, key, reason
        where = f"{path}: {key}: " if key else f"{path}: "
        super().__init__(f"{where}{reason}")


_PLAN_KEYS = {"stripe_price", "limits", "alert_ratio", "on_limit", "vat_rate"}


def _read_plans_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlansFileError(path, "", f"cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise PlansFileError(path, "", "is not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlansFileError(path, "", f"is not valid TOML ({exc})") from None


def _table(path: Path, key: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PlansFileError(path, key, "must be a table")
    return value


def _number(path: Path, key: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise PlansFileError(path, key, f"must be a number from {low:g} to {high:g}")
    return float(value)


def _validated_plan(path: Path, name: str, spec: object) -> dict[str, Any]:
    plan = _table(path, f"plans.{name}", spec)
    for key in plan:
        if key not in _PLAN_KEYS:
            allowed = ", ".join(sorted(_PLAN_KEYS))
            raise PlansFileError(path, f"plans.{name}.{key}", f"unknown key (allowed: {allowed})")
    for metric, limit in _table(path, f"plans.{name}.limits", plan.get("limits", {})).items():
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= 2**62:
            raise PlansFileError(
                path, f"plans.{name}.limits.{metric}", "must be a non-negative integer"
            )
    if "stripe_price" in plan and not isinstance(plan["stripe_price"], str):
        raise PlansFileError(path, f"plans.{name}.stripe_price", "must be a string")
    if plan.get("on_limit", "block") not in ("block", "allow"):
        raise PlansFileError(path, f"plans.{name}.on_limit", 'must be "block" or "allow"')
    if "alert_ratio" in plan:
        _number(path, f"plans.{name}.alert_ratio", plan["alert_ratio"], 0.01, 1.0)
    if "vat_rate" in plan:
        _number(path, f"plans.{name}.vat_rate", plan["vat_rate"], 0.0, 100.0)
    return plan


def _read_catalog_file(path: Path) -> tuple[dict[str, Meter], dict[str, dict[str, Any]]]:
    document = _read_plans_file(path)
    for key in document:
        if key not in ("meters", "plans"):
            raise PlansFileError(path, key, "unknown key (allowed: meters, plans)")
    meters: dict[str, Meter] = {}
    for name, spec in _table(path, "meters", document.get("meters", {})).items():
        aggregation = _table(path, f"meters.{name}", spec).get("aggregation", "sum")
        if aggregation not in ("sum", "count", "max"):
            raise PlansFileError(
                path, f"meters.{name}.aggregation", 'must be "sum", "count" or "max"'
            )
        meters[name] = Meter(name, aggregation)
    plans = _table(path, "plans", document.get("plans", {}))
    return meters, {name: _validated_plan(path, name, spec) for name, spec in plans.items()}


def load_catalog(settings: Settings) -> Catalog:
    """The catalog, or PlansFileError naming the plans file, the key and the reason."""
    raw: dict[str, dict[str, Any]] = {}
    meters = {name: Meter(name) for name in BUILTIN_METRICS}
    if settings.plans_file:
        file_meters, raw = _read_catalog_file(Path(settings.plans_file))
        meters.update(file_meters)

    plans: dict[str, Plan] = {}
    for name in sorted({*_SEED_LIMITS, *raw}, key=_plan_order):
        spec = raw.get(name, {})
        limits = dict(_SEED_LIMITS.get(name, {}))
        limits.update({k: int(v) for k, v in dict(spec.get("limits", {})).items()})
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
            alert_ratio=float(spec.get("alert_ratio", 0.8)),
            on_limit="allow" if spec.get("on_limit") == "allow" else "block",
            vat_rate_bp=round(float(spec.get("vat_rate", 20.0)) * 100),
        )
    return Catalog(plans=plans, meters=meters)


def _plan_order(name: str) -> tuple[int, str]:
    """The seed's plans first (free, premium, pro), then the file's by name."""
    seeded = list(_SEED_LIMITS)
    return (seeded.index(name), "") if name in seeded else (len(seeded), name)
