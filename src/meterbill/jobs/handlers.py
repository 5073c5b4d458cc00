"""What each kind of job does; the worker looks them up here."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from meterbill.billing.duplicates import cancel_duplicate_subscriptions, users_with_duplicates
from meterbill.billing.grace import expire_grace_periods
from meterbill.billing.reconcile import reconcile
from meterbill.billing.retention import prune_billing_events
from meterbill.billing.webhooks import apply_kept_events
from meterbill.invoicing.documents import RENDER_JOB
from meterbill.invoicing.models import Invoice
from meterbill.invoicing.pending import issue_pending_documents
from meterbill.invoicing.seals import render_and_seal, seal_documents
from meterbill.jobs.queue import prune_jobs
from meterbill.jobs.worker import Handler, JobContext
from meterbill.notify.service import EMAIL_JOB, notify_invoice_issued, send_email_job
from meterbill.notify.webhooks import WEBHOOK_DELIVERY, WEBHOOK_EVENT, deliver, fan_out

log = logging.getLogger("meterbill.jobs")


def send_email(ctx: JobContext) -> str:
    return send_email_job(ctx.db, ctx.settings, ctx.job)


def fan_out_webhook(ctx: JobContext) -> int:
    return fan_out(ctx.db, ctx.settings, ctx.job.payload)


def deliver_webhook(ctx: JobContext) -> None:
    deliver(ctx.settings, ctx.job.payload["url"], ctx.job.payload["event"])


def render_document(ctx: JobContext) -> int:
    return render_and_seal(ctx.db, ctx.settings, str(ctx.job.payload["invoice_number"]))


def end_grace_periods(ctx: JobContext) -> int:
    return expire_grace_periods(ctx.db, ctx.now)


def reconcile_with_stripe(ctx: JobContext) -> dict[str, Any]:
    if not ctx.gateway.configured:
        return {"skipped": "stripe not configured"}
    report = reconcile(ctx.db, ctx.settings, ctx.catalog, ctx.gateway, ctx.now)
    return {"customers": report.customers, "healed": report.healed, "failed": report.failed}


def apply_kept_stripe_events(ctx: JobContext) -> int:
    return apply_kept_events(ctx.db, ctx.settings, ctx.catalog, ctx.gateway, ctx.now)


def cancel_duplicates(ctx: JobContext) -> int:
    """Second live subscriptions left by a Stripe failure after their webhook."""
    if not ctx.gateway.configured:
        return 0
    canceled = 0
    for user_id in users_with_duplicates(ctx.db):
        canceled += len(
            cancel_duplicate_subscriptions(
                ctx.db, ctx.settings, ctx.catalog, ctx.gateway, user_id, ctx.now
            )
        )
    return canceled


def prune(ctx: JobContext) -> dict[str, int]:
    with ctx.db.transaction() as session:
        events = prune_billing_events(
            session, ctx.now - timedelta(days=ctx.settings.event_retention_days)
        )
        jobs = prune_jobs(
            session, ctx.now - timedelta(days=ctx.settings.job_retention_days), ctx.now
        )
    return {"billing_events": events, "jobs": jobs}


def issue_waiting_documents(ctx: JobContext) -> dict[str, int]:
    """Invoices and credit notes that waited for the seller's identity, issued now; and
    every document not sealed yet (files rendered and hashed into its series' chain)."""

    def notify(session: Session, document: Invoice) -> None:
        if document.kind == "invoice":
            notify_invoice_issued(session, document.id)

    issued = issue_pending_documents(ctx.db, ctx.settings, ctx.catalog, lambda: ctx.now, notify)
    return {"issued": len(issued), "sealed": seal_documents(ctx.db, ctx.settings)}


HANDLERS: dict[str, Handler] = {
    EMAIL_JOB: send_email,
    WEBHOOK_EVENT: fan_out_webhook,
    WEBHOOK_DELIVERY: deliver_webhook,
    RENDER_JOB: render_document,
    "schedule.grace": end_grace_periods,
    "schedule.reconcile": reconcile_with_stripe,
    "schedule.prune": prune,
    "schedule.kept_events": apply_kept_stripe_events,
    "schedule.duplicates": cancel_duplicates,
    "schedule.pending_invoices": issue_waiting_documents,
}
