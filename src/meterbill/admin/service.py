"""Operator accounts: creation, sign-in with lockout, sessions, and the audit log.

Passwords are hashed with argon2id (argon2-cffi). After `max_failures` consecutive wrong
passwords an account is locked for `lockout`; a sign-in attempt on a locked account is
refused without checking the password, so guessing cannot go on during the lock.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from meterbill.admin.models import AdminSession, AdminUser, AppSecret, AuditEntry
from meterbill.db import insert_for
from meterbill.errors import AccountLocked, AdminExists, InvalidCredentials

_hasher = PasswordHasher()
# Verified against when the email is unknown, so both cases cost one argon2 verification.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
MIN_PASSWORD_LENGTH = 12


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def normalize_email(email: str) -> str:
    return email.strip().lower()


def create_admin(session: Session, email: str, password: str, now: datetime) -> AdminUser:
    """A new operator account; raises AdminExists when the email has one already."""
    email = normalize_email(email)
    if not email or "@" not in email:
        raise ValueError("an operator is named by an email address")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
    if session.scalar(select(AdminUser.id).where(AdminUser.email == email)) is not None:
        raise AdminExists()
    admin = AdminUser(email=email, password_hash=_hasher.hash(password), created_at=now)
    session.add(admin)
    session.flush()
    record(session, "cli", "admin.created", email, None, now)
    return admin


@dataclass(frozen=True)
class SignIn:
    admin_id: int
    email: str
    token: str  # goes in the cookie; only its digest is stored
    csrf_token: str


def authenticate(
    session: Session,
    email: str,
    password: str,
    now: datetime,
    *,
    max_failures: int,
    lockout: timedelta,
    session_lifetime: timedelta,
) -> SignIn:
    """Check the password and open a session, or raise InvalidCredentials / AccountLocked.

    The caller commits even when this raises, so that failures and locks are kept: use
    `sign_in` below, which does.
    """
    email = normalize_email(email)
    admin = session.scalars(
        select(AdminUser).where(AdminUser.email == email).with_for_update()
    ).one_or_none()
    if admin is None:
        _verify(_DUMMY_HASH, password)
        record(session, email[:320] or "?", "sign_in.failed", None, "unknown account", now)
        raise InvalidCredentials()
    if admin.locked_until is not None and admin.locked_until > now:
        record(session, email, "sign_in.refused", None, "account locked", now)
        raise AccountLocked(admin.locked_until)
    if not _verify(admin.password_hash, password):
        admin.failed_attempts += 1
        if admin.failed_attempts >= max_failures:
            admin.locked_until = now + lockout
            admin.failed_attempts = 0
            record(session, email, "account.locked", None, f"{max_failures} wrong passwords", now)
            raise AccountLocked(admin.locked_until)
        record(session, email, "sign_in.failed", None, "wrong password", now)
        raise InvalidCredentials()
    admin.failed_attempts = 0
    admin.locked_until = None
    admin.last_sign_in_at = now
    if _hasher.check_needs_rehash(admin.password_hash):
        admin.password_hash = _hasher.hash(password)
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    session.add(
        AdminSession(
            token_hash=_digest(token),
            admin_id=admin.id,
            csrf_token=csrf,
            created_at=now,
            expires_at=now + session_lifetime,
        )
    )
    session.execute(delete(AdminSession).where(AdminSession.expires_at < now))
    record(session, email, "sign_in", None, None, now)
    return SignIn(admin.id, admin.email, token, csrf)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class Operator:
    """The operator behind a valid session (or a trusted proxy header)."""

    admin_id: int
    email: str
    csrf_token: str
    session_token: str | None


def operator_of_session(session: Session, token: str, now: datetime) -> Operator | None:
    """The operator signed in with this cookie token, or None (unknown or expired)."""
    row = session.execute(
        select(AdminSession.csrf_token, AdminUser.id, AdminUser.email)
        .join(AdminUser, AdminUser.id == AdminSession.admin_id)
        .where(AdminSession.token_hash == _digest(token), AdminSession.expires_at > now)
    ).first()
    if row is None:
        return None
    return Operator(row.id, row.email, row.csrf_token, token)


def operator_by_email(session: Session, email: str, csrf_seed: str) -> Operator | None:
    """The operator an authenticating proxy vouches for (trusted header), or None."""
    admin = session.scalars(
        select(AdminUser).where(AdminUser.email == normalize_email(email))
    ).one_or_none()
    if admin is None:
        return None
    # No session row: the CSRF token is bound to the account and the proxy's secret seed.
    csrf = hmac.new(csrf_seed.encode(), f"proxy:{admin.id}".encode(), "sha256").hexdigest()
    return Operator(admin.id, admin.email, csrf, None)


def csrf_matches(expected: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(expected.encode(), str(presented).encode())


def sign_out(session: Session, operator: Operator, now: datetime) -> None:
    if operator.session_token:
        session.execute(
            delete(AdminSession).where(AdminSession.token_hash == _digest(operator.session_token))
        )
    record(session, operator.email, "sign_out", None, None, now)


def record(
    session: Session,
    actor: str,
    action: str,
    target: str | None,
    detail: str | None,
    now: datetime,
) -> None:
    """Write one line of the audit log, in the caller's transaction."""
    session.add(
        AuditEntry(
            actor=actor[:320],
            action=action,
            target=target[:255] if target else None,
            detail=detail,
            created_at=now,
        )
    )


def audit_entries(
    session: Session, *, target: str | None = None, page: int = 1, per_page: int = 50
) -> tuple[list[AuditEntry], int]:
    """The audit log, newest first (optionally about one target), and its length."""
    query = select(AuditEntry)
    count = select(func.count()).select_from(AuditEntry)
    if target is not None:
        query = query.where(AuditEntry.target == target)
        count = count.where(AuditEntry.target == target)
    rows = session.scalars(
        query.order_by(AuditEntry.id.desc()).offset((page - 1) * per_page).limit(per_page)
    ).all()
    return list(rows), int(session.scalar(count) or 0)


def shared_secret(session: Session, name: str, now: datetime) -> str:
    """A random secret made once for the whole deployment (every process reads the same)."""
    value = session.scalar(select(AppSecret.value).where(AppSecret.name == name))
    if value is not None:
        return value
    session.execute(
        insert_for(session)(AppSecret)
        .values(name=name, value=secrets.token_urlsafe(48), created_at=now)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    return str(session.scalar(select(AppSecret.value).where(AppSecret.name == name)))
