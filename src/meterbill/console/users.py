"""Users: the searchable list, one user's page, and reconciling a user with Stripe."""

from __future__ import annotations

import calendar
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from meterbill.admin.service import audit_entries, record
from meterbill.auth.directory import search_users
from meterbill.auth.models import User
from meterbill.billing import reports as billing_reports
from meterbill.billing.reconcile import reconcile_customer
from meterbill.billing.service import subscription_status
from meterbill.billing.subscriptions import LIVE_STATUSES
from meterbill.console.charts import usage_chart
from meterbill.console.rendering import page
from meterbill.console.session import FormDep, OperatorDep, ServicesDep
from meterbill.errors import MeterbillError, NotFound
from meterbill.invoicing.reports import search_documents
from meterbill.notify.history import messages_of_user
from meterbill.services import Services
from meterbill.usage.recording import month_of
from meterbill.usage.reports import days_of_month
from meterbill.usage.service import monthly_consumption, parse_month

router = APIRouter(prefix="/admin", include_in_schema=False)
PER_PAGE = 50
UserId = Annotated[str, Path(min_length=1, max_length=255)]
Filter = Annotated[str | None, Query(max_length=255)]
PageNumber = Annotated[int, Query(ge=1, le=100_000)]


@router.get("/users")
def users(
    request: Request,
    operator: OperatorDep,
    services: ServicesDep,
    q: Filter = None,
    plan: Filter = None,
    status: Filter = None,
    page_number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
) -> Response:
    with services.db.reading() as session:
        rows, more = search_users(
            session, query=q, plan=plan, status=status, page=page_number, per_page=PER_PAGE
        )
    return page(
        request,
        "users.html",
        {
            "operator": operator,
            "section": "users",
            "users": rows,
            "more": more,
            "page": page_number,
            "q": q or "",
            "plan": plan or "",
            "status": status or "",
            "plans": sorted(services.catalog.plans),
            "statuses": [*LIVE_STATUSES, "canceled"],
        },
    )


def user_details(services: Services, user_id: str) -> dict[str, Any]:
    """Everything the user's page shows."""
    now = services.now()
    month = month_of(now)
    with services.db.reading() as session:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound()
        consumption = monthly_consumption(session, services.catalog, user_id, month, now)
        days = days_of_month(session, services.catalog.meters, user_id, month)
        history = billing_reports.subscription_history(session, user_id)
        events, _ = billing_reports.list_events(session, user_id=user_id, per_page=30)
        documents, more_documents = search_documents(session, user_id=user_id, per_page=30)
        messages = messages_of_user(session, user_id)
        audit, _ = audit_entries(session, target=user_id, per_page=20)
    status = subscription_status(services.db, user_id, now)
    plan = services.catalog.plan(consumption.plan)
    start, _ = parse_month(month)
    length = calendar.monthrange(start.year, start.month)[1]
    charts = {
        metric: usage_chart(
            start,
            length,
            days.get(metric, []),
            figures.limit or None,
            plan.alert_ratio,
            f"{metric} used this month, day by day, against the {plan.name} limit",
            f"chart-{metric}",
        )
        for metric, figures in consumption.metrics.items()
    }
    return {
        "user": user,
        "status": status,
        "month": month,
        "consumption": consumption,
        "days": days,
        "charts": charts,
        "history": history,
        "events": events,
        "documents": documents,
        "more_documents": more_documents,
        "messages": messages,
        "audit": audit,
    }


@router.get("/users/{user_id}")
def user_page(
    request: Request, user_id: UserId, operator: OperatorDep, services: ServicesDep
) -> Response:
    try:
        details = user_details(services, user_id)
    except NotFound:
        return page(
            request,
            "message.html",
            {"operator": operator, "title": "No such user", "text": f"No user has id {user_id}."},
            status=404,
        )
    notice = request.query_params.get("done")
    return page(
        request,
        "user.html",
        {"operator": operator, "section": "users", "notice": notice, **details},
    )


@router.post("/users/{user_id}/reconcile")
async def reconcile_user(
    user_id: UserId, operator: OperatorDep, form: FormDep, services: ServicesDep
) -> Response:
    """Compare the user's subscriptions with Stripe now (as `meterbill reconcile
    --customer`), and write the outcome to the audit log."""
    outcome = await run_in_threadpool(_reconcile, services, operator.email, user_id)
    return RedirectResponse(f"/admin/users/{user_id}?done={outcome}", status_code=303)


def _reconcile(services: Services, actor: str, user_id: str) -> str:
    now = services.now()
    with services.db.reading() as session:
        user = session.get(User, user_id)
        customer = user.stripe_customer_id if user else None
    if not customer:
        outcome, detail = "reconcile-no-customer", "no Stripe customer"
    else:
        try:
            healed = reconcile_customer(
                services.db,
                services.settings,
                services.catalog,
                services.gateway,
                user_id,
                customer,
                now,
            )
            outcome, detail = "reconciled", f"{healed} subscription(s) healed"
        except MeterbillError as exc:
            outcome, detail = "reconcile-failed", exc.code
    with services.db.transaction() as session:
        record(session, actor, "user.reconcile", user_id, detail, now)
    return outcome
