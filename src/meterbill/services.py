"""What a request handler needs, built once per process and kept on the app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from fastapi import Request

from meterbill.billing.gateway import StripeGateway
from meterbill.config import Catalog, Settings
from meterbill.db import Database, utcnow


@dataclass
class Services:
    settings: Settings
    db: Database
    gateway: StripeGateway
    clock: Callable[[], datetime] = utcnow
    catalog: Catalog = field(init=False)

    def __post_init__(self) -> None:
        self.catalog = self.settings.catalog()

    def now(self) -> datetime:
        """The current UTC time; tests pass a clock to travel in time."""
        return self.clock()


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]
