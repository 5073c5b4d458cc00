"""Sending email over SMTP (`METERBILL_SMTP_URL`), one message per call.

URL forms: ``smtp://host:port`` (plain), ``smtp://host:port?starttls=1`` (STARTTLS),
``smtps://host:port`` (TLS from the start); ``user:password@`` before the host logs in.
"""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

SMTP_TIMEOUT_SECONDS = 20


class SmtpNotConfigured(Exception):
    """No METERBILL_SMTP_URL: meterbill does not send email."""


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    tls: bool = False
    starttls: bool = False
    username: str | None = None
    password: str | None = None


def parse_smtp_url(url: str) -> SmtpServer:
    if not url:
        raise SmtpNotConfigured()
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("METERBILL_SMTP_URL must look like smtp://host:port")
    query = parse_qs(parts.query)
    tls = parts.scheme == "smtps"
    return SmtpServer(
        host=parts.hostname,
        port=parts.port or (465 if tls else 25),
        tls=tls,
        starttls=query.get("starttls", ["0"])[0].lower() in ("1", "true", "yes"),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def message_id_for(cause: str, sender: str) -> str:
    """A Message-ID fixed by the email's cause: if a crash ever makes meterbill send one
    email twice, mail systems see the same message and can drop the copy."""
    domain = sender.rsplit("@", 1)[-1].strip("> ") or "meterbill"
    return f"<{hashlib.sha256(cause.encode()).hexdigest()[:32]}@{domain}>"


def build_message(
    *,
    sender: str,
    to: str,
    subject: str,
    body: str,
    message_id: str,
    attachments: list[Path] | None = None,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = message_id
    message.set_content(body)
    for path in attachments or []:
        message.add_attachment(
            path.read_bytes(), maintype="application", subtype="pdf", filename=path.name
        )
    return message


def send_message(smtp_url: str, message: EmailMessage) -> None:
    """Hand the message to the SMTP server; raises only if it was not accepted.

    Once the server has taken the message, a failure to say goodbye (QUIT) is ignored:
    raising then would have the job retried and the email sent twice.
    """
    server = parse_smtp_url(smtp_url)
    client: smtplib.SMTP
    if server.tls:
        client = smtplib.SMTP_SSL(
            server.host,
            server.port,
            timeout=SMTP_TIMEOUT_SECONDS,
            context=ssl.create_default_context(),
        )
    else:
        client = smtplib.SMTP(server.host, server.port, timeout=SMTP_TIMEOUT_SECONDS)
    try:
        if server.starttls:
            client.starttls(context=ssl.create_default_context())
        if server.username:
            client.login(server.username, server.password or "")
        client.send_message(message)
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


def is_permanent_refusal(exc: BaseException) -> bool:
    """A 5xx answer (unknown mailbox, refused sender): sending again cannot help."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return 500 <= exc.smtp_code < 600
    return False
