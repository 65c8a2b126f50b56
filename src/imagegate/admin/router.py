"""The admin pages: login, overview, history, job detail, maintenance, audit (keys and playground: keys_pages)."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi.staticfiles import StaticFiles

from imagegate.admin import queries, service
from imagegate.admin.web import (
    COOKIE,
    HERE,
    LOGIN_CSRF_COOKIE,
    Admin,
    chart_svg,
    confirm_page,
    confirmed,
    cookie_options,
    csrf_ok,
    duration,
    forbidden_csrf,
    form_value,
    page,
    prefix,
    read_form,
    redirect,
)
from imagegate.api.files import stored_response
from imagegate.db import utcnow
from imagegate.errors import InvalidRequest, NotFound
from imagegate.jobs import queries as job_queries
from imagegate.jobs import spend
from imagegate.jobs.models import Job, JobStatus
from imagegate.services import AppServices, Services
from imagegate.webhooks import service as webhooks

router = APIRouter(prefix="/admin", include_in_schema=False)
static = StaticFiles(directory=HERE / "static")


# Login and logout


@router.get("/login")
async def login_page(request: Request, next: str = "/admin") -> Response:
    """The login form, with a CSRF token bound to a cookie."""
    token = secrets.token_urlsafe(24)
    response = page(request, "login.html", admin=None, title="Log in", csrf=token, next=_safe_next(next))
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, **cookie_options(request))
    return response


def _safe_next(value: str) -> str:
    return value if value.startswith("/admin") and "//" not in value else "/admin"


@router.post("/login")
async def login(request: Request, svc: AppServices) -> Response:
    """Check the password (throttled per client) and open a server-side session."""
    settings, sessions = svc.settings, svc.sessions
    form = await read_form(request)
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, form_value(form, "csrf")):
        return forbidden_csrf(request, None)
    window = timedelta(seconds=settings.admin_login_window_seconds)
    client = service.client_label(request.client.host if request.client else "unknown")
    attempt = await service.begin_attempt(
        sessions=sessions, client=client, max_failures=settings.admin_login_max_failures, window=window
    )
    if attempt is None:
        return page(
            request,
            "login.html",
            admin=None,
            status=429,
            title="Log in",
            csrf=expected,
            next=_safe_next(form_value(form, "next")),
            error="Too many failed logins from here; wait a few minutes and try again.",
        )
    ok = await service.check_password(sessions=sessions, password=form_value(form, "password"))
    await service.finish_attempt(sessions=sessions, attempt=attempt, client=client, ok=ok)
    if not ok:
        return page(
            request,
            "login.html",
            admin=None,
            status=401,
            title="Log in",
            csrf=expected,
            next=_safe_next(form_value(form, "next")),
            error="Wrong password.",
        )
    opened = await service.open_session(sessions=sessions, hours=settings.admin_session_hours)
    response = redirect(request, _safe_next(form_value(form, "next")))
    response.set_cookie(
        COOKIE, opened.cookie, max_age=int(settings.admin_session_hours * 3600), **cookie_options(request)
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=prefix(request) + "/admin")
    return response


@router.post("/logout")
async def logout(request: Request, admin: Admin, svc: AppServices) -> Response:
    """End this session on the server; its cookie no longer opens anything."""
    form = await read_form(request)
    if not csrf_ok(admin, form):
        return forbidden_csrf(request, admin)
    await service.close_session(sessions=svc.sessions, cookie=request.cookies.get(COOKIE, ""))
    response = redirect(request, "/admin/login")
    response.delete_cookie(COOKIE, path=prefix(request) + "/admin")
    return response


# Overview


@router.get("")
async def overview(request: Request, admin: Admin, svc: AppServices) -> Response:
    """Queue, last 24 hours, images per day, backends, storage, recent jobs."""
    async with svc.sessions() as session:
        spend_days = await spend.cost_per_day(session, now=utcnow(), days=queries.CHART_DAYS)
        figures = await queries.overview(session, utcnow())
        names = await queries.key_names(session, (job.key_handle for job in figures.recent))
    backend_set, settings = svc.backends, svc.settings
    rows = [
        {
            "name": name,
            "type": settings.backends[name].type if name in settings.backends else "?",
            "concurrency": backend_set.concurrency[name],
            "running": figures.per_backend.get(name, {}).get(JobStatus.RUNNING, 0),
            "queued": figures.per_backend.get(name, {}).get(JobStatus.QUEUED, 0),
            "models": sorted(m for m, b in backend_set.models.items() if b == name),
        }
        for name in sorted(backend_set.backends)
    ]
    return page(
        request,
        "overview.html",
        admin=admin,
        title="Overview",
        active="/admin",
        o=figures,
        chart=chart_svg(figures.per_day),
        spend_per_day=spend_days,
        backends=rows,
        names=names,
        flash=await service.take_flash(admin=admin),
    )


# History and jobs


@router.get("/history")
async def history(
    request: Request,
    admin: Admin,
    svc: AppServices,
    key: str = "",
    status: str = "",
    model: str = "",
    backend: str = "",
    since: str = "",
    until: str = "",
    q: Annotated[str, Query(max_length=500)] = "",
    cursor: str | None = None,
) -> Response:
    """Jobs newest first, filtered, one page at a time."""
    filters = queries.HistoryFilter(key.strip(), status, model, backend, since, until, q.strip())
    refused: InvalidRequest | None = None
    async with svc.sessions() as session:
        try:
            result = await queries.history(session, filters, cursor)
        except InvalidRequest as error:  # a bad date: the filters stay as typed, with what to fix
            result, refused = queries.HistoryPage([], None, filters), error
        names = await queries.key_names(session, (job.key_handle for job in result.jobs))
    backend_set = svc.backends
    next_link = None
    if result.next_cursor:
        query = urlencode({**filters.as_query(), "cursor": result.next_cursor})
        next_link = f"{prefix(request)}/admin/history?{query}"
    csv_link = f"{prefix(request)}/admin/history.csv?{urlencode(filters.as_query())}"
    return page(
        request,
        "history.html",
        admin=admin,
        status=refused.status if refused else 200,
        error=refused.message if refused else None,
        title="History",
        active="/admin/history",
        page=result,
        statuses=[s.value for s in JobStatus],
        models=sorted(backend_set.models),
        backends=sorted(backend_set.backends),
        next_link=next_link,
        csv_link=csv_link,
        names=names,
        flash=await service.take_flash(admin=admin),
    )


async def _job(svc: Services, job_id: str) -> Job:
    async with svc.sessions() as session:
        job = await job_queries.any_job(session, job_id)
    if job is None:
        raise NotFound(f"No job {job_id}.")
    return job


@router.get("/jobs/{job_id}")
async def job_page(job_id: str, request: Request, admin: Admin, svc: AppServices) -> Response:
    """Everything about one job; reloads itself while it runs."""
    job = await _job(svc, job_id)
    async with svc.sessions() as session:
        deliveries = await webhooks.deliveries_of(session, job.id)
        names = await queries.key_names(session, [job.key_handle])
    return page(
        request,
        "job.html",
        admin=admin,
        title=job_id,
        active="/admin/history",
        job=job,
        cost=job.cost_usd,
        deliveries=deliveries,
        names=names,
        refresh=None if job.is_finished else 2,
        flash=await service.take_flash(admin=admin),
    )


@router.get("/jobs/{job_id}/inputs/{index}", response_model=None)
@router.head("/jobs/{job_id}/inputs/{index}", response_model=None)
async def job_input(job_id: str, index: int, request: Request, admin: Admin, svc: AppServices) -> Response:
    """A job's input image, streamed from storage (admins only: inputs have no public URL)."""
    job = await _job(svc, job_id)
    item = next((i for i in job.inputs if i.index == index), None)
    if item is None:
        raise NotFound("No such input.")
    try:
        return await stored_response(request, item.storage_key, media_type=f"image/{item.format}", headers={})
    except FileNotFoundError:
        raise NotFound("This input is no longer stored.") from None


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, request: Request, admin: Admin, svc: AppServices) -> Response:
    """Cancel a queued or running job (any key's)."""
    form = await read_form(request)
    if not csrf_ok(admin, form):
        return forbidden_csrf(request, admin)
    job = await service.cancel_job(ctx=svc.jobs, job_id=job_id)
    said = "Cancelled" if job.status == JobStatus.CANCELLED else f"Asked to cancel; it is {job.status}"
    await service.set_flash(sessions=svc.sessions, admin=admin, message=f"{said}: job {job_id}.")
    return redirect(request, f"/admin/jobs/{job_id}")


@router.post("/jobs/{job_id}/delete")
async def delete_job(job_id: str, request: Request, admin: Admin, svc: AppServices) -> Response:
    """Delete a job's files and hide it, after a confirmation step."""
    form = await read_form(request)
    if not csrf_ok(admin, form):
        return forbidden_csrf(request, admin)
    if not confirmed(form):
        job = await _job(svc, job_id)
        files = len(job.images) + len(job.inputs)
        return confirm_page(
            request,
            admin,
            heading=f"Delete job {job_id}?",
            message=f"Its {files} file(s) are removed for good; its record stays in the history as deleted.",
            action=f"/admin/jobs/{job_id}/delete",
            button="Delete job and files",
            back=f"/admin/jobs/{job_id}",
        )
    await service.delete_job(ctx=svc.jobs, job_id=job_id)
    await service.set_flash(sessions=svc.sessions, admin=admin, message=f"Deleted job {job_id}.")
    return redirect(request, "/admin/history")


# Maintenance, audit


@router.get("/maintenance")
async def maintenance(request: Request, admin: Admin, svc: AppServices) -> Response:
    """Storage figures and the cleanup button."""
    async with svc.sessions() as session:
        figures = await queries.overview(session, utcnow())
    on_disk = await svc.storage.usage_bytes()
    return page(
        request,
        "maintenance.html",
        admin=admin,
        title="Maintenance",
        active="/admin/maintenance",
        stored=figures.stored_bytes,
        on_disk=on_disk,
        interval=duration(svc.settings.cleanup_interval_seconds),
        flash=await service.take_flash(admin=admin),
    )


@router.post("/maintenance/cleanup")
async def cleanup(request: Request, admin: Admin, svc: AppServices) -> Response:
    """Run the retention sweep now and say what it removed."""
    form = await read_form(request)
    if not csrf_ok(admin, form):
        return forbidden_csrf(request, admin)
    report = await service.cleanup(ctx=svc.jobs)
    summary = (
        f"Cleanup: expired {report.expired_jobs} job(s), removed {report.deleted_files} file(s), "
        f"{report.orphan_files} orphan file(s) and {report.backend_items} backend cache item(s)."
    )
    await service.set_flash(sessions=svc.sessions, admin=admin, message=summary)
    return redirect(request, "/admin/maintenance")


@router.get("/audit")
async def audit_page(
    request: Request,
    admin: Admin,
    svc: AppServices,
    action: Annotated[str, Query(max_length=40)] = "",
    actor: Annotated[str, Query(max_length=16)] = "",
    key: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    """The newest audit events (admin actions, key changes, refusals), filtered by action, actor and key."""
    filters = queries.AuditFilter(action.strip(), actor.strip(), key.strip())
    async with svc.sessions() as session:
        events = await queries.audit_events(session, filters, limit=200)
        names = await queries.key_names(session, (e.key_handle for e in events if e.key_handle))
    return page(
        request,
        "audit.html",
        admin=admin,
        title="Audit",
        active="/admin/audit",
        events=events,
        names=names,
        filters=filters,
        actions=queries.AUDIT_ACTIONS,
        actors=["admin", "api", "cli"],
    )
