"""What was sent to a user (emails) and about them (webhooks), read from the job queue,
and sending an invoice's email again on an operator's request."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from meterbill.invoicing.models import Invoice
from meterbill.jobs.models import Job
from meterbill.notify.service import EMAIL_JOB, enqueue_email
from meterbill.notify.webhooks import WEBHOOK_EVENT

RECENT_JOBS = 20_000


@dataclass(frozen=True)
class Message:
    job_id: int
    channel: str  # email | webhook
    subject: str  # the email template, or the webhook event type
    status: str
    attempts: int
    created_at: datetime
    finished_at: datetime | None
    last_error: str | None


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def messages_of_user(
    session: Session, user_id: str, limit: int = 50, window: int = RECENT_JOBS
) -> list[Message]:
    """The newest emails and webhook events about the user among the queue's last `window`
    jobs (finished jobs are pruned after METERBILL_JOB_RETENTION_DAYS anyway): a bounded
    read, whatever the size of the queue's history."""
    needle = f'%"user_id":{_escape_like(json.dumps(user_id))}%'
    newest = session.scalar(select(func.max(Job.id))) or 0
    jobs = session.scalars(
        select(Job)
        .where(
            Job.id > newest - window,
            Job.kind.in_((EMAIL_JOB, WEBHOOK_EVENT)),
            Job.payload.like(needle, escape="\\"),
        )
        .order_by(Job.id.desc())
        .limit(limit)
    ).all()
    messages = []
    for job in jobs:
        payload: dict[str, Any] = json.loads(job.payload or "{}")
        if job.kind == EMAIL_JOB:
            if payload.get("user_id") != user_id:
                continue
            channel, subject = "email", str(payload.get("template", ""))
        else:
            if (payload.get("data") or {}).get("user_id") != user_id:
                continue
            channel, subject = "webhook", str(payload.get("type", ""))
        messages.append(
            Message(
                job.id,
                channel,
                subject,
                job.status,
                job.attempts,
                job.created_at,
                job.finished_at,
                job.last_error,
            )
        )
    return messages


def resend_invoice_email(session: Session, invoice: Invoice, now: datetime) -> None:
    """Queue the invoice's email (with its PDF) once more, to the user's address now."""
    enqueue_email(
        session,
        invoice.user_id,
        "invoice_issued",
        {"invoice_id": invoice.id},
        cause=f"{invoice.id}:resent:{now.isoformat()}",
    )
