"""Every table, imported in one place so Alembic and the tests see the whole schema."""

from meterbill.auth.models import ApiKey, User
from meterbill.billing.models import BillingEvent, Subscription
from meterbill.db import Base
from meterbill.invoicing.models import DocumentSequence, Invoice, Transaction
from meterbill.usage.models import ConsumptionEvent, UsageDaily

__all__ = [
    "ApiKey",
    "Base",
    "BillingEvent",
    "ConsumptionEvent",
    "DocumentSequence",
    "Invoice",
    "Subscription",
    "Transaction",
    "UsageDaily",
    "User",
]
