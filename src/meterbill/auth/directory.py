"""Finding users for the operator console: by id or email, by plan and subscription
status, a page at a time."""

from __future__ import annotations

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session

from meterbill.auth.models import User
from meterbill.billing.models import Subscription
from meterbill.db import page_of


def _like_prefix(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


def search_users(
    session: Session,
    *,
    query: str | None = None,
    plan: str | None = None,
    status: str | None = None,
    page: int = 1,
    per_page: int = 50,
) -> tuple[list[User], bool]:
    """Users whose id or email starts with `query`, on `plan`, with a subscription in
    `status`, in id order; and whether more follow."""
    statement = select(User)
    if query:
        text = query.strip()
        statement = statement.where(
            or_(
                User.id == text,
                User.email == text.lower(),
                User.id.like(_like_prefix(text), escape="\\"),
                User.email.like(_like_prefix(text.lower()), escape="\\"),
            )
        )
    if plan:
        statement = statement.where(User.plan == plan)
    if status:
        statement = statement.where(
            exists().where(Subscription.user_id == User.id, Subscription.status == status)
        )
    return page_of(session, statement.order_by(User.id), page, per_page)
