"""Every table, imported in one place so Alembic and the tests see the whole schema."""

from meterbill.admin.models import AdminSession, AdminUser, AppSecret, AuditEntry
from meterbill.auth.models import ApiKey, User
from meterbill.billing.models import BillingEvent, Subscription
from meterbill.db import Base
from meterbill.invoicing.models import DocumentSequence, Invoice, Transaction
from meterbill.jobs.models import Job
from meterbill.sandbox import DemoDatabase
from meterbill.usage.models import (
    ConsumptionEvent,
    UsageAlert,
    UsageDaily,
    UsageMonthly,
    UsageRetention,
)

__all__ = [
    "AdminSession",
    "AdminUser",
    "ApiKey",
    "AppSecret",
    "AuditEntry",
    "Base",
    "BillingEvent",
    "ConsumptionEvent",
    "DemoDatabase",
    "DocumentSequence",
    "Invoice",
    "Job",
    "Subscription",
    "Transaction",
    "UsageAlert",
    "UsageDaily",
    "UsageMonthly",
    "UsageRetention",
    "User",
]
