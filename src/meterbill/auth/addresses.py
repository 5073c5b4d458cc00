"""Email addresses that come from outside (a token's `email` claim): exactly one mailbox.

A claim such as ``a@example.com, b@example.com`` or ``Name <a@example.com>`` or one with a
line break would make an invoice go to several recipients (or smuggle a header); only a
bare single address passes, checked by `email-validator` (syntax only, no DNS lookup).
"""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

MAX_ADDRESS_LENGTH = 320  # the column's width


def single_address(value: object) -> str | None:
    """The address, normalized (domain lower-cased, IDNA), or None unless `value` is
    exactly one bare email address."""
    if not isinstance(value, str) or not value or len(value) > MAX_ADDRESS_LENGTH:
        return None
    try:
        checked = validate_email(value, check_deliverability=False, allow_display_name=False)
    except EmailNotValidError:
        return None
    normalized: str = checked.normalized
    return normalized
