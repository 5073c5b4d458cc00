"""Talk to meterbill from a SaaS: clients (sync and async) and metering middlewares.

    from meterbill.client import MeterbillClient, MeterbillWSGI, MeterbillASGI

Depends only on httpx; importing it does not import the meterbill server.
"""

from meterbill.client.api import (
    AsyncMeterbillClient,
    BillingPageLink,
    Ingested,
    MeterbillClient,
    MeterbillClientError,
    MeterbillConfigurationError,
    MeterbillUnavailable,
    QuotaStatus,
    usage_event,
)
from meterbill.client.asgi import MeterbillASGI
from meterbill.client.buffer import EventBuffer
from meterbill.client.guard import header_identity
from meterbill.client.wsgi import MeterbillWSGI

__all__ = [
    "AsyncMeterbillClient",
    "BillingPageLink",
    "EventBuffer",
    "Ingested",
    "MeterbillASGI",
    "MeterbillClient",
    "MeterbillClientError",
    "MeterbillConfigurationError",
    "MeterbillUnavailable",
    "MeterbillWSGI",
    "QuotaStatus",
    "header_identity",
    "usage_event",
]
