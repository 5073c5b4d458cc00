"""Telling users and the SaaS's backend what happened: each function enqueues, in the
caller's transaction, the email and the outgoing webhook of one cause, at most once.

The email job holds facts, not text: it is rendered when sent, in the user's language and
to the user's address at that moment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from meterbill.auth.addresses import single_address
from meterbill.auth.models import User
from meterbill.config import Settings
from meterbill.db import Database, utcnow
from meterbill.invoicing.models import Invoice
from meterbill.jobs.queue import ClaimedJob, NewJob, PermanentJobError, enqueue, enqueue_many
from meterbill.notify import templates
from meterbill.notify.email import (
    build_message,
    is_permanent_refusal,
    message_id_for,
    send_message,
)
from meterbill.notify.webhooks import emit_webhook, webhook_job

log = logging.getLogger("meterbill.notify")
EMAIL_JOB = "email.send"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def enqueue_email(
    session: Session, user_id: str, template: str, params: dict[str, Any], cause: str
) -> None:
    job = email_job(user_id, template, params, cause)
    enqueue(session, job.kind, job.payload, dedupe_key=job.dedupe_key)


def email_job(user_id: str, template: str, params: dict[str, Any], cause: str) -> NewJob:
    """The job of `enqueue_email` (for `enqueue_many`)."""
    if template not in templates.TEMPLATES:
        raise ValueError(f"unknown email template {template}")
    payload = {"user_id": user_id, "template": template, "params": params}
    return NewJob(EMAIL_JOB, payload, f"email:{template}:{cause}")


def notify_payment_failed(
    session: Session,
    user_id: str,
    *,
    cause: str,
    plan: str | None,
    amount: int | None,
    currency: str | None,
    grace_period_end: datetime | None,
    subscription_id: str | None,
    now: datetime,
) -> None:
    """Email and webhook for a failed payment (`cause`: the invoice attempt)."""
    params = {
        "plan": plan,
        "amount": amount,
        "currency": currency,
        "grace_period_end": _iso(grace_period_end),
    }
    enqueue_email(session, user_id, "payment_failed", params, cause)
    emit_webhook(
        session,
        "payment.failed",
        {"user_id": user_id, "subscription_id": subscription_id, **params},
        cause=cause,
        now=now,
    )


def notify_grace_ended(
    session: Session,
    user_id: str,
    *,
    subscription_id: str,
    plan: str,
    grace_period_end: datetime,
    now: datetime,
) -> None:
    cause = f"{subscription_id}:{int(grace_period_end.timestamp())}"
    params = {"plan": plan, "grace_period_end": _iso(grace_period_end)}
    enqueue_email(session, user_id, "grace_ended", params, cause)
    emit_webhook(
        session,
        "subscription.grace_ended",
        {"user_id": user_id, "subscription_id": subscription_id, "new_plan": "free", **params},
        cause=cause,
        now=now,
    )


def notify_plan_changed(
    session: Session, user_id: str, old_plan: str, new_plan: str, now: datetime
) -> None:
    """Webhook only: the change is enqueued with the transaction that made it."""
    emit_webhook(
        session,
        "plan.changed",
        {"user_id": user_id, "old_plan": old_plan, "new_plan": new_plan},
        now=now,
    )


@dataclass(frozen=True)
class QuotaAlert:
    """`metric` reached `level` % (80, 100) of `limit` in `month` (YYYY-MM)."""

    user_id: str
    metric: str
    level: int
    month: str
    usage: int | None = None
    limit: int | None = None


def notify_quota_alert(
    session: Session,
    user_id: str,
    metric: str,
    level: int,
    month: str,
    *,
    usage: int | None = None,
    limit: int | None = None,
) -> None:
    """Email and webhook when `metric` reaches `level` % (80, 100) of the plan's limit in
    `month` (YYYY-MM); once per user, metric, month, level and limit (a plan change's new
    limit alerts again)."""
    notify_quota_alerts(session, [QuotaAlert(user_id, metric, level, month, usage, limit)])


def notify_quota_alerts(session: Session, alerts: list[QuotaAlert]) -> None:
    """`notify_quota_alert` for several alerts, their jobs enqueued in one statement."""
    jobs: list[NewJob] = []
    now = utcnow()
    for alert in alerts:
        cause = f"{alert.user_id}:{alert.metric}:{alert.month}:{int(alert.level)}"
        if alert.limit is not None:
            cause += f":{alert.limit}"
        params = {
            "metric": alert.metric,
            "level": int(alert.level),
            "month": alert.month,
            "usage": alert.usage,
            "limit": alert.limit,
        }
        jobs.append(email_job(alert.user_id, "quota_alert", params, cause))
        data = {"user_id": alert.user_id, **params}
        jobs.append(webhook_job("quota.alert", data, cause=cause, now=now))
    enqueue_many(session, jobs)


def notify_invoice_issued(session: Session, invoice_id: int) -> None:
    """Email (with the PDF when the invoice has one) and webhook for an issued invoice."""
    invoice = session.get_one(Invoice, invoice_id)
    cause = str(invoice_id)
    enqueue_email(session, invoice.user_id, "invoice_issued", {"invoice_id": invoice_id}, cause)
    emit_webhook(
        session,
        "invoice.issued",
        {
            "user_id": invoice.user_id,
            "invoice_id": invoice.id,
            "invoice_number": invoice.invoice_number,
            "kind": invoice.kind,
            "amount": invoice.amount,
            "currency": invoice.currency,
            "issued_at": _iso(invoice.issued_at),
        },
        cause=cause,
        now=invoice.issued_at,
    )


# -- sending (run by the worker) ------------------------------------------------------------


def _date(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _fields(
    session: Session, settings: Settings, template: str, locale: str, params: dict[str, Any]
) -> tuple[dict[str, Any], list[Path]]:
    """The template's fields in `locale`, and the files to attach."""
    fields: dict[str, Any] = dict(params)
    fields["portal_url"] = settings.portal_link()
    fields["upgrade_url"] = f"{settings.app_base_url.rstrip('/')}/billing"
    fields["plan"] = params.get("plan") or ""
    grace_end = _date(params.get("grace_period_end"))
    fields["grace_end"] = templates.format_date(grace_end, locale)
    fields["amount"] = templates.format_money(params.get("amount"), params.get("currency"), locale)
    fields["grace_line_fr"] = (
        f"Votre plan reste actif jusqu'au {templates.format_date(grace_end, 'fr')}."
        if grace_end
        else ""
    )
    fields["grace_line_en"] = (
        f"Your plan stays active until {templates.format_date(grace_end, 'en')}."
        if grace_end
        else ""
    )
    attachments: list[Path] = []
    if template == "quota_alert":
        fields["metric"] = templates.metric_label(str(params.get("metric")), locale)
        fields["month"] = templates.format_month(str(params.get("month")), locale)
        usage, limit = params.get("usage"), params.get("limit")
        has_numbers = usage is not None and limit is not None
        fields["quota_line_fr"] = f"Utilisé : {usage} sur {limit}." if has_numbers else ""
        fields["quota_line_en"] = f"Used: {usage} of {limit}." if has_numbers else ""
    if template == "invoice_issued":
        invoice = session.get_one(Invoice, int(params["invoice_id"]))
        fields["invoice_number"] = invoice.invoice_number
        fields["issued_on"] = templates.format_date(invoice.issued_at, locale)
        fields["amount"] = templates.format_money(invoice.amount, invoice.currency, locale)
        # The PDF is attached as issued; the worker renders it if nobody has yet.
        fields["attachment_line_fr"] = "Elle est jointe à ce message."
        fields["attachment_line_en"] = "It is attached to this message."
    return fields, attachments


def send_email_job(db: Database, settings: Settings, job: ClaimedJob) -> str:
    """Render and send one email job; returns what happened (``sent`` or why not)."""
    payload = job.payload
    with db.reading() as session:
        user = session.get(User, payload["user_id"])
        if user is None or not user.email:
            log.info("email not sent: user has no address", extra={"job_id": job.id})
            return "no_address"
        locale = user.locale if user.locale in templates.LOCALES else templates.DEFAULT_LOCALE
        fields, attachments = _fields(
            session, settings, payload["template"], locale, payload.get("params") or {}
        )
        # Rows written before addresses were checked may hold a list: send to none.
        address = single_address(user.email)
        if address is None:
            log.warning("email not sent: the user's address is not one mailbox",
                        extra={"job_id": job.id})  # fmt: skip
            return "invalid_address"
    if payload["template"] == "invoice_issued":
        # Imported here: the PDF and e-invoice modules (and Stripe's SDK behind them) are
        # not for every `meterbill` start, which reaches this module through the models.
        from meterbill.invoicing.pdf import ensure_pdf

        attachments.append(ensure_pdf(db, settings, fields["invoice_number"]))
    if not settings.smtp_url:
        log.warning("email not sent: METERBILL_SMTP_URL is not set", extra={"job_id": job.id})
        return "smtp_not_configured"
    subject, body = templates.render(payload["template"], locale, fields)
    message = build_message(
        sender=settings.email_from,
        to=address,
        subject=subject,
        body=body,
        message_id=message_id_for(job.dedupe_key or f"job:{job.id}", settings.email_from),
        attachments=attachments,
    )
    try:
        send_message(settings.smtp_url, message)
    except Exception as exc:
        if is_permanent_refusal(exc):
            raise PermanentJobError(f"SMTP refused the email: {exc}") from exc
        raise
    return "sent"
