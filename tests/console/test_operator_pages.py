"""The operator console's pages in a real browser: find a user, their usage chart, an
invoice PDF, actions written to the audit log; and the overview, lists and CSV export."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect
from sqlalchemy import select, update

from meterbill.jobs.models import Job
from tests import stripe_events as se
from tests.console.conftest import NOW, OPERATOR, Console, sign_in
from tests.console.test_billing_page import SHOTS
from tests.invoicing.helpers import posted


def _seed(console: Console) -> str:
    day = NOW.replace(day=3)
    console.send_usage(
        "alice", "api_calls", [(day + timedelta(days=n), 20 * (n + 1)) for n in range(5)]
    )
    console.send_usage("alice", "tokens", [(day, 5_000)])
    console.send_usage("bob", "api_calls", [(day, 7)])
    console.send_usage("carol", "api_calls", [(day, 3)])
    return console.issue_invoice("alice", "in_alice_1", amount=1080)


def test_find_a_user_and_open_their_usage_chart(page: Page, console: Console) -> None:
    _seed(console)
    sign_in(page, console)
    page.get_by_role("link", name="Users").click()
    page.get_by_label("Id or email").fill("ali")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("main table tbody tr")
    expect(rows).to_have_count(1)
    page.get_by_role("link", name="alice", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("alice")
    chart = page.get_by_role("img", name="api_calls used this month, day by day")
    expect(chart).to_be_visible()
    # One bar per day with usage; the month to date grows 20, 60, 120, 200, 300 (the limit).
    bars = page.locator("#chart-api_calls rect.bar")
    expect(bars).to_have_count(5)
    expect(page.locator("#chart-api_calls rect.bar.hard")).to_have_count(1)
    expect(page.locator("#chart-api_calls line.limit-line")).to_have_count(1)
    expect(page.locator("#usage-api_calls figcaption")).to_contain_text("300 of 300")
    page.locator("#usage-api_calls summary").click()
    expect(page.locator("#usage-api_calls table")).to_contain_text("2026-11-07")
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/console-user.png", full_page=True)


def test_download_an_invoice_pdf(page: Page, console: Console) -> None:
    number = _seed(console)
    sign_in(page, console)
    page.goto(f"{console.url}/admin/invoices?month=2026-11")
    expect(page.locator("main table tbody tr")).to_have_count(1)
    with page.expect_download() as download:
        page.get_by_role("link", name=f"PDF of {number}").click()
    assert download.value.suggested_filename == f"{number}.pdf"
    assert Path(download.value.path()).read_bytes().startswith(b"%PDF")
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/console-invoices.png", full_page=True)


def test_resending_an_invoice_email_is_queued_and_audited(page: Page, console: Console) -> None:
    number = _seed(console)
    sign_in(page, console)
    page.goto(f"{console.url}/admin/users/alice")
    expect(page.get_by_text("No operator action yet.")).to_be_visible()
    page.get_by_role("button", name=f"Resend email for {number}").click()
    expect(page.get_by_role("status")).to_have_text("The invoice email was queued again.")
    audit = page.locator("#user-audit")
    expect(audit).to_contain_text("invoice.resend_email")
    expect(audit).to_contain_text(OPERATOR)
    expect(audit).to_contain_text(number)
    with console.service.db.reading() as session:
        emails = [
            json.loads(job.payload)
            for job in session.scalars(select(Job).where(Job.kind == "email.send"))
        ]
    invoice_emails = [e for e in emails if e["template"] == "invoice_issued"]
    assert len(invoice_emails) == 2  # the one sent at issue, and the one asked for now
    page.get_by_role("link", name="Audit log").click()
    expect(page.locator("#audit tbody tr").first).to_contain_text("invoice.resend_email")


def test_retrying_a_parked_job_requeues_it_and_is_audited(page: Page, console: Console) -> None:
    _seed(console)
    with console.service.db.transaction() as session:
        job_id = session.scalars(select(Job.id).where(Job.kind == "email.send")).first()
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status="failed", attempts=10, last_error="SMTP 550 mailbox unavailable")
        )
    sign_in(page, console)
    page.goto(f"{console.url}/admin/jobs?status=failed")
    expect(page.locator("main table")).to_contain_text("SMTP 550")
    page.get_by_role("button", name=f"Retry job {job_id}").click()
    expect(page.get_by_role("status")).to_have_text("The job is queued again.")
    with console.service.db.reading() as session:
        job = session.get_one(Job, job_id)
        assert (job.status, job.attempts) == ("queued", 0)
    page.goto(f"{console.url}/admin/audit")
    expect(page.locator("#audit tbody tr").first).to_contain_text("job.retry")


def test_reconcile_without_a_stripe_customer_is_reported_and_audited(
    page: Page, console: Console
) -> None:
    _seed(console)
    sign_in(page, console)
    page.goto(f"{console.url}/admin/users/bob")
    page.get_by_role("button", name="Reconcile with Stripe now").click()
    expect(page.get_by_role("status")).to_contain_text("no Stripe customer")
    expect(page.locator("#user-audit")).to_contain_text("user.reconcile")


def test_overview_counts_and_ranks_from_the_rollups(page: Page, console: Console) -> None:
    _seed(console)
    sign_in(page, console)
    expect(page.locator("#mrr")).to_have_text("€9.00")  # 10.80 TTC at 20 % VAT
    top = page.get_by_role("heading", name="api_calls").locator("xpath=..").locator("li")
    expect(top).to_have_count(3)
    expect(top.first).to_contain_text("alice — 300")
    expect(top.nth(1)).to_contain_text("bob — 7")
    expect(page.get_by_role("img", name="Net revenue per month")).to_be_visible()
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/console-overview.png", full_page=True)


def test_csv_export_is_the_clis(console: Console, page: Page) -> None:
    number = _seed(console)
    sign_in(page, console)
    response = page.request.get(f"{console.url}/admin/invoices/export.csv?month=2026-11")
    assert response.status == 200
    rows = list(csv.reader(io.StringIO(response.text())))
    assert rows[0][0] == "numero" and rows[1][0] == number
    assert rows[1][10] == "10.80"
    anonymous = httpx.get(f"{console.url}/admin/invoices/export.csv", follow_redirects=False)
    assert anonymous.status_code == 303


def test_lists_filter_and_the_plans_page_shows_the_catalog(page: Page, console: Console) -> None:
    _seed(console)
    sign_in(page, console)
    page.goto(f"{console.url}/admin/users?plan=premium")
    expect(page.get_by_text("No user matches.")).to_be_visible()
    page.goto(f"{console.url}/admin/users?plan=free")
    expect(page.locator("main table tbody tr")).to_have_count(3)
    page.goto(f"{console.url}/admin/stripe-events")
    expect(page.locator("main table")).to_contain_text("invoice.paid")
    page.goto(f"{console.url}/admin/plans")
    expect(page.locator("main table")).to_contain_text("30,000")
    page.goto(f"{console.url}/admin/users/nobody")
    expect(page.get_by_role("heading", level=1)).to_have_text("No such user")


def test_a_rejected_stripe_event_is_listed_with_a_reconcile_action(
    page: Page, console: Console
) -> None:
    created = int((NOW - timedelta(days=1)).timestamp())
    sub = se.subscription("sub_zed", "cus_zed", "price_unknown", user_id="zed", created=created)
    posted(console.service, se.event("customer.subscription.created", sub, created))
    sign_in(page, console)
    page.goto(f"{console.url}/admin")
    expect(page.locator("#failed-events")).to_have_text("1")
    page.locator("#failed-events").click()
    row = page.locator("main table tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("rejected")
    page.get_by_role("button", name="Reconcile zed").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("zed")
    expect(page.get_by_role("status")).to_contain_text("nothing changed")
    expect(page.locator("#user-audit")).to_contain_text("stripe_not_configured")
