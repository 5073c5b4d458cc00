"""The end-user billing page: a signed link from the API, plan and usage, documents,
language, 360 px, and links that expired or were tampered with."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import stripe
from playwright.sync_api import Browser, Page, expect

from meterbill.auth.service import create_api_key
from meterbill.client import MeterbillClient
from tests import stripe_events as se
from tests.billing.test_plan_changes import (
    live_subscriptions,
    peer_get,
    price_of,
    subscribe,
)
from tests.conftest import Service, StripePeer, stripe_peer_price
from tests.console.conftest import NOW, Console

SHOTS = os.environ.get("METERBILL_CONSOLE_SCREENSHOTS")  # a folder: docs/ images are made here


def _link(console: Console, user_id: str, **extra: object) -> str:
    response = console.page_link(user_id, **extra)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["expires_at"].startswith("2026-11-20T10:15:00")  # 15 minutes by default
    return str(body["url"])


def _alice_with_usage_and_an_invoice(console: Console) -> str:
    day = NOW - timedelta(days=2)
    console.send_usage("alice", "api_calls", [(day, 150), (day + timedelta(days=1), 100)])
    console.send_usage("alice", "tokens", [(day, 100_000)])
    return console.issue_invoice("alice", "in_alice_1", amount=1080)


def test_a_link_needs_an_api_key_and_a_sane_body(console: Console) -> None:
    anonymous = console.service.client.post("/api/v1/billing/page-links", json={"user_id": "a"})
    assert anonymous.status_code == 401
    bad = console.page_link("")
    assert bad.status_code == 422
    assert bad.json()["code"] == "validation_error"


def test_the_client_library_asks_for_a_link(console: Console) -> None:
    with MeterbillClient(console.url, console.api_key) as client:
        link = client.billing_page_link("carol", locale="en", expires_in_minutes=5)
    assert link.url.startswith(f"{console.url}/billing/page/")
    assert link.expires_at == NOW + timedelta(minutes=5)
    page = httpx.get(link.url)
    assert page.status_code == 200 and "<h1>Billing</h1>" in page.text


def test_the_page_shows_plan_usage_states_and_downloads_documents(
    page: Page, console: Console
) -> None:
    number = _alice_with_usage_and_an_invoice(console)
    console.issue_invoice("bob", "in_bob_1")
    page.goto(_link(console, "alice"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Facturation")  # French first
    expect(page.locator("#current-plan")).to_have_text("free")
    expect(page.locator("#meter-api_calls")).to_contain_text("250 sur 300")
    expect(page.locator("#meter-api_calls .state")).to_contain_text("proche de la limite")
    expect(page.locator("#meter-tokens .state")).to_contain_text("limite atteinte")
    bar = page.get_by_role("progressbar", name="api_calls")
    assert bar.get_attribute("aria-valuenow") == "250"
    with page.expect_download() as download:
        page.get_by_role("link", name=f"Télécharger le PDF {number}").click()
    pdf = Path(download.value.path()).read_bytes()
    assert pdf.startswith(b"%PDF")
    assert page.get_by_text("in_bob_1").count() == 0
    page.get_by_role("link", name="English").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Billing")
    expect(page.locator("#meter-tokens .state")).to_contain_text("limit reached")
    if SHOTS:
        page.set_viewport_size({"width": 1000, "height": 900})
        page.screenshot(path=f"{SHOTS}/billing-page.png", full_page=True)


def test_another_users_document_cannot_be_fetched_through_a_link(console: Console) -> None:
    theirs = console.issue_invoice("bob", "in_bob_2")
    url = _link(console, "alice")
    response = httpx.get(f"{url}/documents/{theirs}.pdf")
    assert response.status_code == 404
    assert not response.content.startswith(b"%PDF")


def test_english_comes_from_the_link_or_accept_language(console: Console) -> None:
    assert "<h1>Billing</h1>" in httpx.get(_link(console, "dan", locale="en")).text
    plain = _link(console, "dan")
    assert "<h1>Billing</h1>" in httpx.get(plain, headers={"Accept-Language": "en-GB"}).text
    assert "<h1>Facturation</h1>" in httpx.get(plain).text


def test_an_expired_or_tampered_link_is_refused_with_a_friendly_page(
    page: Page, console: Console
) -> None:
    url = _link(console, "alice")
    body = url.rsplit("/", 1)[1].split(".")[0]
    forged_body = base64.urlsafe_b64encode(
        json.dumps(["bob", "", 1_900_000_000], separators=(",", ":")).encode()
    ).rstrip(b"=")
    forged = url.replace(body, forged_body.decode())
    for bad in (forged, url[:-2] + ("AA" if not url.endswith("AA") else "BB"), url + "x"):
        response = page.goto(bad)
        assert response is not None and response.status == 403
        expect(page.get_by_role("heading", level=1)).to_have_text("Lien expiré ou invalide")
    console.service.clock.fixed = NOW + timedelta(minutes=15, seconds=1)
    response = page.goto(url)
    assert response is not None and response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("n'est plus valable")
    assert "alice" not in page.content()
    portal = httpx.post(f"{url}/portal", follow_redirects=False)
    assert portal.status_code == 403


def test_the_page_fits_360_pixels(browser: Browser, console: Console) -> None:
    _alice_with_usage_and_an_invoice(console)
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True)
    page = context.new_page()
    page.goto(_link(console, "alice", locale="en"))
    expect(page.get_by_role("heading", name="Change plan")).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the page is {width}px wide at 360px"
    for button in page.get_by_role("button").all():
        box = button.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/billing-page-360.png", full_page=True)
    context.close()


def test_grace_end_is_shown_when_a_payment_failed(page: Page, console: Console) -> None:
    service = console.service
    start = int((NOW - timedelta(days=10)).timestamp())
    failed_at = int((NOW - timedelta(hours=1)).timestamp())
    sub = se.subscription("sub_eve", "cus_eve", "price_premium_test", user_id="eve", created=start)
    failed = se.invoice("in_eve", "cus_eve", "sub_eve", paid=False, created=failed_at)
    assert service.post_event(se.event("customer.subscription.created", sub, start)).is_success
    assert service.post_event(se.event("invoice.payment_failed", failed, failed_at)).is_success
    page.goto(_link(console, "eve", locale="en"))
    expect(page.locator("#current-plan")).to_have_text("premium")
    expect(page.locator("#current-status")).to_have_text("payment past due")
    expect(page.locator("#grace")).to_contain_text("before November 2")


def test_a_free_user_buys_a_plan_through_checkout_and_errors_are_pages(
    stripe_peer: StripePeer,
    make_console: Callable[..., Console],
) -> None:
    unconfigured = make_console()
    refused = httpx.post(
        f"{_link(unconfigured, 'frank')}/plan", data={"plan": "premium"}, follow_redirects=False
    )
    assert refused.status_code == 503
    assert "Stripe non configuré" in refused.text and "<html" in refused.text
    stripe_peer.reset()

    console = make_console(
        stripe_secret_key="sk_test_meterbill",
        stripe_api_base=stripe_peer.url,
        stripe_price_premium=stripe_peer_price(stripe_peer, 900),
    )
    bought = httpx.post(
        f"{_link(console, 'frank')}/plan", data={"plan": "premium"}, follow_redirects=False
    )
    assert bought.status_code == 303, bought.text
    assert bought.headers["location"].startswith("https://")
    assert "checkout" in bought.headers["location"]


def test_a_subscriber_changes_plan_on_the_one_subscription(
    stripe_service: Service, stripe_peer: StripePeer, page: Page
) -> None:
    sdk = stripe.StripeClient(
        "sk_test_meterbill", base_addresses={"api": stripe_peer.url}, max_network_retries=0
    )
    sub = subscribe(stripe_service, sdk, "gus", "premium")
    with stripe_service.db.transaction() as session:
        key = create_api_key(session, "saas")
    answer = stripe_service.client.post(
        "/api/v1/billing/page-links",
        json={"user_id": "gus", "locale": "en"},
        headers={"X-API-Key": key},
    )
    page.goto(answer.json()["url"])
    expect(page.locator("#current-plan")).to_have_text("premium")
    page.get_by_role("button", name="Choose pro").click()
    expect(page.get_by_role("status")).to_have_text("Your plan change is recorded.")
    expect(page.locator("#current-plan")).to_have_text("pro")
    at_stripe = peer_get(stripe_peer, f"/v1/subscriptions/{sub['id']}")
    assert price_of(at_stripe) == stripe_service.settings.stripe_price_pro
    assert [s["id"] for s in live_subscriptions(stripe_peer, sub["customer"])] == [sub["id"]]
