"""Emails over real SMTP (aiosmtpd): in French and English, once per cause, and waiting
for the SMTP server when it is down."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

from pypdf import PdfReader
from sqlalchemy import select

from meterbill.auth.models import User
from meterbill.auth.service import lock_user
from meterbill.invoicing.models import Invoice
from meterbill.jobs.models import Job
from meterbill.notify.service import EMAIL_JOB, notify_quota_alert
from tests import stripe_events as se
from tests.conftest import Service
from tests.jobs.conftest import Jobs, SmtpServer


def _add_user(jobs: Jobs, user_id: str, locale: str, email: str | None = None) -> None:
    with jobs.db.transaction() as session:
        user = lock_user(session, user_id, email or f"{user_id}@example.com")
        user.locale = locale


def _email_jobs(jobs: Jobs) -> list[Job]:
    with jobs.db.reading() as session:
        return list(session.scalars(select(Job).where(Job.kind == EMAIL_JOB)))


def _text(message: object) -> str:
    body = message.get_body(("plain",))  # type: ignore[attr-defined]
    return str(body.get_content())


def test_emails_wait_while_smtp_is_down_and_go_out_once_when_it_is_back(
    make_jobs: Callable[..., Jobs], smtp_down: SmtpServer
) -> None:
    jobs = make_jobs(smtp_url=smtp_down.url)
    _add_user(jobs, "u-fr", "fr")
    with jobs.db.transaction() as session:
        notify_quota_alert(session, "u-fr", "api_calls", 80, "2026-11", usage=240, limit=300)

    jobs.run()
    [job] = _email_jobs(jobs)
    assert (job.status, job.attempts) == ("queued", 1)
    assert "ConnectionRefusedError" in (job.last_error or "")
    jobs.advance(seconds=15)
    jobs.run()
    assert _email_jobs(jobs)[0].attempts == 2 and not smtp_down.messages

    smtp_down.start()
    jobs.advance(seconds=30)
    jobs.run()
    assert _email_jobs(jobs)[0].status == "done"
    [message] = smtp_down.messages
    assert message["To"] == "u-fr@example.com"
    assert message["Subject"] == "Vous avez utilisé 80 % de votre quota (appels d'API)"
    assert "novembre 2026" in _text(message) and "Utilisé : 240 sur 300." in _text(message)

    # The same cause again (a retry upstream, a second alert check): no second email.
    with jobs.db.transaction() as session:
        notify_quota_alert(session, "u-fr", "api_calls", 80, "2026-11", usage=250, limit=300)
    jobs.advance(hours=2)
    jobs.run()
    assert len(smtp_down.messages) == 1 and len(_email_jobs(jobs)) == 1
    assert message["Message-ID"].endswith("@localhost>")


def test_payment_failed_email_in_french_and_english_with_grace_end_and_portal_link(
    service: Service, make_jobs: Callable[..., Jobs], smtp: SmtpServer
) -> None:
    jobs = make_jobs(smtp_url=smtp.url)
    failed_at = int(datetime(2026, 11, 20, 9, 30, tzinfo=UTC).timestamp())
    for user_id, locale in (("u-fr", "fr"), ("u-en", "en")):
        _add_user(jobs, user_id, locale)
        customer, sub = f"cus_{user_id}", f"sub_{user_id}"
        created = se.event(
            "customer.subscription.created",
            se.subscription(sub, customer, "price_premium_test", user_id=user_id,
                            created=failed_at - 86400),
            created=failed_at - 86400,
        )  # fmt: skip
        failed = se.event(
            "invoice.payment_failed",
            se.invoice(f"in_{user_id}", customer, sub, paid=False, created=failed_at),
            created=failed_at,
        )
        assert service.post_event(created).status_code == 200
        assert service.post_event(failed).status_code == 200
        assert service.post_event(failed).status_code == 200  # redelivered: no second email

    assert jobs.run() >= 2
    by_user = {m["To"].split("@")[0]: m for m in smtp.messages}
    assert len(smtp.messages) == 2
    fr, en = by_user["u-fr"], by_user["u-en"]
    assert fr["Subject"] == "Échec de votre paiement"
    assert "Votre plan reste actif jusqu'au 23 novembre 2026." in _text(fr)
    assert "https://app.example.com/billing/portal" in _text(fr)
    assert "9,00 €" in _text(fr)
    assert en["Subject"] == "Your payment failed"
    assert "Your plan stays active until November 23, 2026." in _text(en)
    assert "https://app.example.com/billing/portal" in _text(en)
    assert "€9.00" in _text(en)


def test_late_payment_failure_for_a_settled_subscription_sends_nothing(
    service: Service, make_jobs: Callable[..., Jobs], smtp: SmtpServer
) -> None:
    jobs = make_jobs(smtp_url=smtp.url)
    _add_user(jobs, "u1", "fr")
    now = int(time.time())
    sub = se.subscription("sub_1", "cus_1", "price_premium_test", user_id="u1", created=now - 99)
    for event in (
        se.event("customer.subscription.created", sub, created=now - 99),
        se.event("invoice.paid", se.invoice("in_2", "cus_1", "sub_1", created=now - 5), now - 5),
        # Stripe created the failure before the payment that settled it; it arrives last.
        se.event(
            "invoice.payment_failed",
            se.invoice("in_1", "cus_1", "sub_1", paid=False, created=now - 50),
            created=now - 50,
        ),
    ):
        assert service.post_event(event).status_code == 200
    jobs.run()
    subjects = [m["Subject"] for m in smtp.messages]
    assert subjects == [f"Votre facture FACT-{datetime.now(UTC):%Y%m}-0001"]  # no failure notice


def test_invoice_email_carries_the_rendered_pdf(
    make_service: Callable[..., Service],
    make_jobs: Callable[..., Jobs],
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    """A paid Stripe invoice issues a local invoice; its email carries the invoice's PDF,
    rendered by whoever gets there first (the API after answering, or the worker)."""
    service = make_service(invoice_dir=tmp_path)
    jobs = make_jobs(smtp_url=smtp.url, invoice_dir=tmp_path)
    _add_user(jobs, "u-en", "en")
    with jobs.db.transaction() as session:
        lock_user(session, "u-en").stripe_customer_id = "cus_en"
    paid = se.event("invoice.paid", se.invoice("in_en", "cus_en", None, amount=1080))
    assert service.post_event(paid).status_code == 200
    assert service.post_event(paid).json()["outcome"] == "duplicate"
    jobs.run()
    [message] = smtp.messages
    with jobs.db.reading() as session:
        number = session.scalars(select(Invoice.invoice_number)).one()
    assert message["Subject"] == f"Your invoice {number}"
    assert "for €10.80" in _text(message)
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == f"{number}.pdf"
    text = "".join(
        page.extract_text() for page in PdfReader(BytesIO(attachment.get_content())).pages
    )
    assert number in text


def test_user_without_address_gets_no_email_and_the_job_ends(
    make_jobs: Callable[..., Jobs], smtp: SmtpServer
) -> None:
    jobs = make_jobs(smtp_url=smtp.url)
    with jobs.db.transaction() as session:
        lock_user(session, "nomail")
        notify_quota_alert(session, "nomail", "tokens", 100, "2026-11")
    jobs.run()
    assert not smtp.messages and _email_jobs(jobs)[0].status == "done"
    with jobs.db.reading() as session:
        assert session.get_one(User, "nomail").locale == "fr"  # the default language


def test_a_refused_address_parks_the_email_at_once(
    make_jobs: Callable[..., Jobs], smtp: SmtpServer
) -> None:
    jobs = make_jobs(smtp_url=smtp.url)
    _add_user(jobs, "u1", "en", email="bounce@example.com")
    with jobs.db.transaction() as session:
        notify_quota_alert(session, "u1", "tokens", 80, "2026-11")
    jobs.run()
    [job] = _email_jobs(jobs)
    assert (job.status, job.attempts) == ("failed", 1)  # a 5xx will not change on retry
    assert "550" in (job.last_error or "") and not smtp.messages


def test_the_token_locale_claim_sets_the_language_of_emails(service: Service) -> None:
    headers = service.auth("u-en", email="en@example.com", locale="en-GB")
    assert service.client.get("/api/v1/billing/status", headers=headers).status_code == 200
    with service.db.reading() as session:
        assert session.get_one(User, "u-en").locale == "en"
    service.client.get("/api/v1/billing/status", headers=service.auth("u-en", locale="fr"))
    service.client.get("/api/v1/billing/status", headers=service.auth("u-en"))  # no claim
    with service.db.reading() as session:
        assert session.get_one(User, "u-en").locale == "fr"
