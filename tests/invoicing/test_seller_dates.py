"""Dates as the seller lives them: issue dates, periods and numbering months in the
seller's time zone (Europe/Paris by default), and never an earlier date on a later number."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lxml import etree

from meterbill.billing.gateway import StripeGateway
from meterbill.billing.webhooks import apply_stripe_event
from tests import stripe_events as se
from tests.conftest import Clock, Service
from tests.invoicing.helpers import customer_of, documents, invoice_json

# 23:30 UTC on 30 November is 00:30 on 1 December in Paris.
PARIS_NEW_MONTH = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)


def test_a_payment_just_after_midnight_in_paris_is_numbered_and_dated_in_december(
    make_service: Callable[..., Service], tmp_path: Path
) -> None:
    service = make_service(Clock(PARIS_NEW_MONTH), invoice_dir=tmp_path)
    customer = customer_of(service)
    stripe_invoice = se.invoice(
        "in_midnight", customer, "sub_m", amount=1080, created=int(PARIS_NEW_MONTH.timestamp())
    )
    service.post_event(se.event("invoice.paid", stripe_invoice))
    (invoice,) = documents(service)
    assert invoice.invoice_number == "FACT-202612-0001"
    assert invoice.period == "2026-12"
    xml = service.client.get(
        f"/api/v1/billing/invoices/{invoice.invoice_number}/xml", headers=service.auth()
    ).content
    root = etree.fromstring(xml)
    issued = root.xpath(
        "/rsm:CrossIndustryInvoice/rsm:ExchangedDocument/ram:IssueDateTime/udt:DateTimeString",
        namespaces=root.nsmap,
    )
    assert issued[0].text == "20261201"
    assert invoice_json(service, invoice.invoice_number)["number"] == "FACT-202612-0001"


def test_the_time_zone_is_configurable(
    make_service: Callable[..., Service], tmp_path: Path
) -> None:
    service = make_service(
        Clock(PARIS_NEW_MONTH), invoice_dir=tmp_path, seller_timezone="America/Martinique"
    )
    service.post_event(se.event("invoice.paid", se.invoice("in_mq", customer_of(service), None)))
    (invoice,) = documents(service)
    assert invoice.invoice_number == "FACT-202611-0001"  # 19:30 on 30 November there


def test_a_later_number_never_carries_an_earlier_date(
    make_service: Callable[..., Service], tmp_path: Path
) -> None:
    """A webhook that began earlier but takes its number later is dated with the
    number before it, not before it."""
    service = make_service(invoice_dir=tmp_path)
    customer = customer_of(service)
    settings = service.settings
    catalog, gateway = settings.catalog(), StripeGateway(settings)
    late = datetime(2026, 12, 1, 0, 0, 5, tzinfo=UTC)
    early = late - timedelta(hours=2)  # still November in Paris
    for stripe_id, now in (("in_late", late), ("in_early", early)):
        event = se.event("invoice.paid", se.invoice(stripe_id, customer, None))
        apply_stripe_event(service.db, settings, catalog, gateway, event, now)
    first, second = documents(service)
    assert (first.invoice_number, second.invoice_number) == ("FACT-202612-0001", "FACT-202612-0002")
    assert second.issued_at >= first.issued_at
