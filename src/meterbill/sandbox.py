"""A database made for `meterbill demo`: the mark the demo leaves, the refusal to load into
a database that holds real books, and the worker's rules on such a database.

The demo writes its mark in the transaction that checks the database holds no users and
no invoices, so from then on the database is the demo's. A worker on a demo database sends
nothing out, whatever the environment configures: emails and outgoing webhooks are
dropped (marked done), and Stripe is not called.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Mapped, mapped_column

from meterbill.auth.models import User
from meterbill.config import Settings
from meterbill.db import Base, Database
from meterbill.errors import NotADemoDatabase
from meterbill.invoicing.models import Invoice


class DemoDatabase(Base):
    """One row when `meterbill demo` made this database its own."""

    __tablename__ = "demo_database"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime]


def claim_for_demo(db: Database, now: datetime) -> None:
    """Mark the database as the demo's; NotADemoDatabase when it holds real users or
    invoices and the demo did not make it."""
    with db.transaction() as session:
        if session.get(DemoDatabase, 1) is not None:
            return
        real_users = session.scalar(select(User.id).limit(1)) is not None
        real_invoices = session.scalar(select(Invoice.id).limit(1)) is not None
        if real_users or real_invoices:
            raise NotADemoDatabase()
        session.add(DemoDatabase(id=1, created_at=now))


def is_demo_database(db: Database) -> bool:
    with db.reading() as session:
        return session.get(DemoDatabase, 1) is not None


def outgoing_job_kinds() -> tuple[str, ...]:
    """The job kinds whose work reaches people or systems outside meterbill."""
    # Imported here, not above: this module holds a table, so every `meterbill` command
    # imports it (through meterbill.models), and the notify modules bring the e-mail
    # validator, httpx and the PDF renderer, which only the worker needs.
    from meterbill.notify.service import EMAIL_JOB
    from meterbill.notify.webhooks import WEBHOOK_DELIVERY, WEBHOOK_EVENT

    return (EMAIL_JOB, WEBHOOK_EVENT, WEBHOOK_DELIVERY)


def sandboxed(settings: Settings) -> Settings:
    """The settings with every way out of meterbill removed: no SMTP server, no webhook
    receivers, no Stripe key."""
    return settings.model_copy(
        update={
            "smtp_url": "",
            "webhook_urls": "",
            "webhook_secret": "",
            "stripe_secret_key": "",
        }
    )
