"""A real browser (Debian's Chromium driven by Playwright) against meterbill on a real
port, with an operator account, an API key, and a user who has usage and an invoice."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright
from sqlalchemy import select

from meterbill.admin.models import AdminUser
from meterbill.admin.service import create_admin
from meterbill.auth.service import create_api_key
from tests import stripe_events as se
from tests.conftest import Clock, Service
from tests.invoicing.helpers import customer_of, documents, posted

CHROMIUM = os.environ.get("METERBILL_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OPERATOR = "ops@example.com"
PASSWORD = "correct horse battery staple"
NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():  # scripts/test installs it; never skip silently
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    browser = playwright_driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, accept_downloads=True, locale="fr-FR"
    )
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


@dataclass
class Console:
    service: Service
    api_key: str

    @property
    def url(self) -> str:
        return self.service.url

    def send_usage(self, user_id: str, metric: str, values: list[tuple[datetime, int]]) -> None:
        events = [
            {
                "id": f"{user_id}-{metric}-{index}",
                "user_id": user_id,
                "metric": metric,
                "value": value,
                "timestamp": moment.isoformat(),
            }
            for index, (moment, value) in enumerate(values)
        ]
        response = self.service.client.post(
            "/api/v1/usage/events", json={"events": events}, headers={"X-API-Key": self.api_key}
        )
        assert response.status_code == 202, response.text

    def issue_invoice(self, user_id: str, stripe_invoice_id: str, amount: int = 1080) -> str:
        customer = customer_of(self.service, user_id)
        posted(
            self.service,
            se.event("invoice.paid", se.invoice(stripe_invoice_id, customer, None, amount=amount)),
        )
        (document,) = [
            d for d in documents(self.service) if d.stripe_invoice_id == stripe_invoice_id
        ]
        return document.invoice_number

    def page_link(self, user_id: str, **extra: Any) -> httpx.Response:
        return self.service.client.post(
            "/api/v1/billing/page-links",
            json={"user_id": user_id, **extra},
            headers={"X-API-Key": self.api_key},
        )


@pytest.fixture
def make_console(make_service: Callable[..., Service]) -> Callable[..., Console]:
    def start(**overrides: Any) -> Console:
        service = make_service(clock=Clock(NOW), **overrides)
        with service.db.transaction() as session:
            if not session.scalar(select(AdminUser.id).where(AdminUser.email == OPERATOR)):
                create_admin(session, OPERATOR, PASSWORD, NOW - timedelta(days=1))
            key = create_api_key(session, "console-tests")
        return Console(service, key)

    return start


@pytest.fixture
def console(make_console: Callable[..., Console]) -> Console:
    return make_console()


def sign_in(page: Page, console: Console, password: str = PASSWORD, *, goto: bool = True) -> None:
    if goto:
        page.goto(f"{console.url}/admin/sign-in")
    page.get_by_label("Email").fill(OPERATOR)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
