"""Stripe events, the job queue (retry a parked job), the plan catalog and the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import RedirectResponse, Response

from meterbill.admin.service import audit_entries, record
from meterbill.billing.reports import list_events
from meterbill.console.rendering import page
from meterbill.console.session import FormDep, OperatorDep, ServicesDep
from meterbill.jobs.queue import retry_job
from meterbill.jobs.reports import page_of_jobs

router = APIRouter(prefix="/admin", include_in_schema=False)
Choice = Annotated[str | None, Query(max_length=32)]
PageNumber = Annotated[int, Query(alias="page", ge=1, le=100_000)]


@router.get("/stripe-events")
def stripe_events(
    request: Request,
    operator: OperatorDep,
    services: ServicesDep,
    outcome: Choice = None,
    page_number: PageNumber = 1,
) -> Response:
    with services.db.reading() as session:
        rows, more = list_events(session, outcome=outcome, page=page_number)
    return page(
        request,
        "events.html",
        {
            "operator": operator,
            "section": "events",
            "events": rows,
            "more": more,
            "page": page_number,
            "outcome": outcome or "",
        },
    )


@router.get("/jobs")
def jobs(
    request: Request,
    operator: OperatorDep,
    services: ServicesDep,
    status: Choice = None,
    page_number: PageNumber = 1,
) -> Response:
    with services.db.reading() as session:
        rows, more = page_of_jobs(session, status=status, page=page_number)
    return page(
        request,
        "jobs.html",
        {
            "operator": operator,
            "section": "jobs",
            "jobs": rows,
            "more": more,
            "page": page_number,
            "status": status or "",
            "notice": request.query_params.get("done"),
        },
    )


@router.post("/jobs/{job_id}/retry")
def retry(
    job_id: Annotated[int, Path(ge=1, le=2**62)],
    operator: OperatorDep,
    form: FormDep,
    services: ServicesDep,
) -> Response:
    """Put a parked job back in the queue (as `meterbill jobs retry`), audited."""
    now = services.now()
    with services.db.transaction() as session:
        done = retry_job(session, job_id, now)
        if done:
            record(session, operator.email, "job.retry", str(job_id), None, now)
    back = form.get("back")
    target = back if isinstance(back, str) and back.startswith("/admin/") else "/admin/jobs"
    return RedirectResponse(
        f"{target}?done={'job-queued' if done else 'job-not-parked'}", status_code=303
    )


@router.get("/plans")
def plans(request: Request, operator: OperatorDep, services: ServicesDep) -> Response:
    catalog = services.catalog
    return page(
        request,
        "plans.html",
        {
            "operator": operator,
            "section": "plans",
            "plans": [catalog.plans[name] for name in sorted(catalog.plans)],
            "meters": catalog.meters,
        },
    )


@router.get("/audit")
def audit(
    request: Request, operator: OperatorDep, services: ServicesDep, page_number: PageNumber = 1
) -> Response:
    with services.db.reading() as session:
        rows, total = audit_entries(session, page=page_number)
    return page(
        request,
        "audit.html",
        {
            "operator": operator,
            "section": "audit",
            "entries": rows,
            "more": page_number * 50 < total,
            "page": page_number,
        },
    )
