"""The admin pages: login, overview, keys, history, job detail, playground, maintenance, accounts, audit."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import select
from sqlalchemy.orm import selectinload
from starlette.datastructures import FormData, UploadFile

from imagegate.admin import queries, service
from imagegate.admin.web import (
    COOKIE,
    HERE,
    LOGIN_CSRF_COOKIE,
    Admin,
    chart_svg,
    cookie_options,
    forbidden_csrf,
    form_value,
    page,
    prefix,
    redirect,
)
from imagegate.backends import usage
from imagegate.db import utcnow
from imagegate.errors import ImagegateError, InvalidRequest, NotFound
from imagegate.jobs import service as jobs
from imagegate.jobs.models import Job, JobStatus
from imagegate.jobs.requests import QUALITIES, GenerationRequest, Reference
from imagegate.keys import audit
from imagegate.keys import service as keys
from imagegate.keys.models import SCOPES, ApiKey
from imagegate.keys.service import KeyLimits
from imagegate.retention import sweep

router = APIRouter(prefix="/admin", include_in_schema=False)
static = StaticFiles(directory=HERE / "static")


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _form(request: Request) -> FormData:
    return await request.form(max_files=20, max_fields=50)


def _csrf_ok(admin: Any, form: FormData) -> bool:
    return service.csrf_ok(admin, form_value(form, "csrf"))


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
async def login(request: Request) -> Response:
    """Check the password (throttled per client) and open a server-side session."""
    settings = request.app.state.settings
    sessions = request.app.state.sessions
    form = await _form(request)
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, form_value(form, "csrf")):
        return forbidden_csrf(request, None)
    window = timedelta(seconds=settings.admin_login_window_seconds)
    client = _client(request)
    if await service.throttled(sessions, client, max_failures=settings.admin_login_max_failures, window=window):
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
    if not await service.check_password(sessions, form_value(form, "password")):
        await service.note_failure(sessions, client, window=window)
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
    opened = await service.open_session(sessions, hours=settings.admin_session_hours)
    response = redirect(request, _safe_next(form_value(form, "next")))
    response.set_cookie(
        COOKIE, opened.cookie, max_age=int(settings.admin_session_hours * 3600), **cookie_options(request)
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=prefix(request) + "/admin")
    return response


@router.post("/logout")
async def logout(request: Request, admin: Admin) -> Response:
    """End this session on the server; its cookie no longer opens anything."""
    form = await _form(request)
    if not _csrf_ok(admin, form):
        return forbidden_csrf(request, admin)
    await service.close_session(request.app.state.sessions, request.cookies.get(COOKIE, ""))
    response = redirect(request, "/admin/login")
    response.delete_cookie(COOKIE, path=prefix(request) + "/admin")
    return response


# Overview


@router.get("")
async def overview(request: Request, admin: Admin) -> Response:
    """Queue, last 24 hours, images per day, backends, storage, recent jobs."""
    async with request.app.state.sessions() as session:
        figures = await queries.overview(session, utcnow())
    backend_set = request.app.state.jobs.backends
    settings = request.app.state.settings
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
        backends=rows,
        flash=await service.take_flash(request.app.state.sessions, admin),
    )


# Keys


def _limits_from(form: FormData) -> KeyLimits:
    def number(name: str) -> int | None:
        value = form_value(form, name)
        if not value:
            return None
        if not value.isdigit() or int(value) < 1:
            raise InvalidRequest(f"{name.replace('_', ' ')} must be a whole number of at least 1, or empty.")
        return int(value)

    models = [m.strip() for m in form_value(form, "models").split(",") if m.strip()]
    return KeyLimits(
        allowed_models=models or None,
        scopes=[s for s in form.getlist("scopes") if isinstance(s, str)],
        rate_limit_per_minute=number("rate_limit"),
        daily_image_quota=number("daily_quota"),
        monthly_image_quota=number("monthly_quota"),
        max_concurrent_jobs=number("max_concurrent"),
    )


@router.get("/keys")
async def keys_page(request: Request, admin: Admin) -> Response:
    """Every key with its status and use; a new key's secret once, right after creating it."""
    sessions = request.app.state.sessions
    flash = await service.take_flash(sessions, admin)
    revealed = None
    if flash and flash.startswith("newkey:"):
        _tag, name, token = flash.split(":", 2)
        revealed, flash = {"name": name, "token": token}, None
    async with sessions() as session:
        rows = await keys.list_keys(session=session)
        totals = await queries.key_totals(session)
    now = utcnow()
    listed = [
        {
            "key": key,
            "status": "disabled"
            if not key.enabled
            else ("expired" if key.expires_at and key.expires_at <= now else "enabled"),
            "requests": totals.get(key.id, (0, 0))[0],
            "images": totals.get(key.id, (0, 0))[1],
        }
        for key in rows
    ]
    return page(
        request,
        "keys.html",
        admin=admin,
        title="Keys",
        active="/admin/keys",
        keys=listed,
        revealed=revealed,
        flash=flash,
        scopes=SCOPES,
        key=None,
    )


@router.post("/keys")
async def create_key(request: Request, admin: Admin) -> Response:
    """Create a key; its secret is shown once on the next page."""
    form = await _form(request)
    if not _csrf_ok(admin, form):
        return forbidden_csrf(request, admin)
    name = form_value(form, "name")
    if not name:
        raise InvalidRequest("A key needs a name.")
    expires = form_value(form, "expires")
    expires_at = datetime.fromisoformat(expires).replace(tzinfo=UTC) if expires else None
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidRequest("The expiry date is in the past.")
    async with request.app.state.sessions() as session, session.begin():
        _key, token = await keys.create_key(
            session=session, name=name, expires_at=expires_at, limits=_limits_from(form), actor="admin"
        )
    # The secret travels only through this session's one-time message, never in a URL.
    await service.set_flash(request.app.state.sessions, admin, f"newkey:{name.replace(':', ' ')}:{token}")
    return redirect(request, "/admin/keys")


@router.get("/keys/{handle}")
async def key_page(handle: str, request: Request, admin: Admin) -> Response:
    """One key's limits, editable."""
    async with request.app.state.sessions() as session:
        key = await keys.get_by_handle(session=session, handle=handle)
    return page(request, "key.html", admin=admin, title=handle, active="/admin/keys", key=key, scopes=SCOPES)


@router.post("/keys/{handle}")
async def update_key(handle: str, request: Request, admin: Admin) -> Response:
    """Save a key's name and limits."""
    form = await _form(request)
    if not _csrf_ok(admin, form):
        return forbidden_csrf(request, admin)
    limits = _limits_from(form)
    limits.name = form_value(form, "name") or handle
    async with request.app.state.sessions() as session, session.begin():
        await keys.update_key(session=session, handle=handle, limits=limits, actor="admin")
    await service.set_flash(request.app.state.sessions, admin, f"Saved {handle}.")
    return redirect(request, "/admin/keys")


@router.post("/keys/{handle}/{action}")
async def key_action(handle: str, action: str, request: Request, admin: Admin) -> Response:
    """Enable, disable or delete a key."""
    form = await _form(request)
    if not _csrf_ok(admin, form):
        return forbidden_csrf(request, admin)
    async with request.app.state.sessions() as session, session.begin():
        if action in ("enable", "disable"):
            await keys.set_enabled(session=session, handle=handle, enabled=action == "enable", actor="admin")
        elif action == "delete":
            await keys.delete_key(session=session, handle=handle, actor="admin")
        else:
            raise NotFound(f"No such action: {action}.")
    await service.set_flash(request.app.state.sessions, admin, f"{action.capitalize()}d {handle}.")
    return redirect(request, "/admin/keys")


# History and jobs


@router.get("/history")
async def history(
    request: Request,
    admin: Admin,
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
    async with request.app.state.sessions() as session:
        result = await queries.history(session, filters, cursor)
    backend_set = request.app.state.jobs.backends
    next_link = None
    if result.next_cursor:
        query = "&".join(f"{k}={v}" for k, v in {**filters.as_query(), "cursor": result.next_cursor}.items())
        next_link = f"{prefix(request)}/admin/history?{query}"
    return page(
        request,
        "history.html",
        admin=admin,
        title="History",
        active="/admin/history",
        page=result,
        statuses=[s.value for s in JobStatus],
        models=sorted(backend_set.models),
        backends=sorted(backend_set.backends),
        next_link=next_link,
    )


async def _job(request: Request, job_id: str) -> Job:
    async with request.app.state.sessions() as session:
        job: Job | None = await session.scalar(
            select(Job).where(Job.id == job_id).options(selectinload(Job.images), selectinload(Job.inputs))
        )
    if job is None:
        raise NotFound(f"No job {job_id}.")
    return job


@router.get("/jobs/{job_id}")
async def job_page(job_id: str, request: Request, admin: Admin) -> Response:
    """Everything about one job; reloads itself while it runs."""
    job = await _job(request, job_id)
    return page(
        request,
        "job.html",
        admin=admin,
        title=job_id,
        active="/admin/history",
        job=job,
        refresh=None if job.is_finished else 2,
        flash=await service.take_flash(request.app.state.sessions, admin),
    )


@router.get("/jobs/{job_id}/inputs/{index}")
async def job_input(job_id: str, index: int, request: Request, admin: Admin) -> Response:
    """A job's input image (admins only: inputs have no public URL)."""
    job = await _job(request, job_id)
    item = next((i for i in job.inputs if i.index == index), None)
    if item is None:
        raise NotFound("No such input.")
    data = await request.app.state.storage.get(item.storage_key)
    return Response(data, media_type=f"image/{item.format}", headers={"Cache-Control": "private, max-age=3600"})


@router.post("/jobs/{job_id}/delete")
async def delete_job(job_id: str, request: Request, admin: Admin) -> Response:
    """Delete a job's files and hide it."""
    form = await _form(request)
    if not _csrf_ok(admin, form):
        return forbidden_csrf(request, admin)
    job = await _job(request, job_id)
    async with request.app.state.sessions() as session:
        owner = await session.get(ApiKey, job.key_id) if job.key_id else None
    if owner is None:
        raise InvalidRequest("This job's key was deleted; its files go with retention.")
    await jobs.delete_job(ctx=request.app.state.jobs, job_id=job_id, key=owner)
    await service.set_flash(request.app.state.sessions, admin, f"Deleted job {job_id}.")
    return redirect(request, "/admin/history")


# Playground


@router.get("/playground")
async def playground(request: Request, admin: Admin) -> Response:
    """A form to run a generation as a chosen key."""
    async with request.app.state.sessions() as session:
        enabled = [k for k in await keys.list_keys(session=session) if k.enabled]
    backend_set = request.app.state.jobs.backends
    models = [backend_set.default_model, *sorted(m for m in backend_set.models if m != backend_set.default_model)]
    return page(
        request,
        "playground.html",
        admin=admin,
        title="Playground",
        active="/admin/playground",
        keys=enabled,
        models=models,
        qualities=QUALITIES,
    )


@router.post("/playground")
async def run_playground(request: Request, admin: Admin) -> Response:
    """Submit the generation as the chosen key (its limits apply) and show the job."""
    form = await _form(request)
    if not _csrf_ok(admin, form):
        return forbidden_csrf(request, admin)
    async with request.app.state.sessions() as session:
        key = await keys.get_by_handle(session=session, handle=form_value(form, "key"))
    references = []
    for position, upload in enumerate(form.getlist("references")):
        if isinstance(upload, UploadFile) and upload.filename:
            references.append(Reference(upload.file, f"references[{position}]"))
    count = form_value(form, "count") or "1"
    if not count.isdigit():
        raise InvalidRequest("count must be a whole number.")
    request_ = GenerationRequest(
        prompt=form_value(form, "prompt"),
        model=form_value(form, "model") or None,
        size=form_value(form, "size") or "auto",
        quality=form_value(form, "quality") or "auto",
        count=int(count),
        output_format=form_value(form, "output_format") or "png",
        references=tuple(references),
    )
    job = await jobs.submit(ctx=request.app.state.jobs, request=request_, key=key)
    return redirect(request, f"/admin/jobs/{job.id}")


# Maintenance, accounts, audit


@router.get("/maintenance")
async def maintenance(request: Request, admin: Admin) -> Response:
    """Storage figures and the cleanup button."""
    async with request.app.state.sessions() as session:
        figures = await queries.overview(session, utcnow())
    on_disk = await request.app.state.storage.usage_bytes()
    interval = timedelta(seconds=request.app.state.settings.cleanup_interval_seconds)
    return page(
        request,
        "maintenance.html",
        admin=admin,
        title="Maintenance",
        active="/admin/maintenance",
        stored=figures.stored_bytes,
        on_disk=on_disk,
        interval=str(interval),
        flash=await service.take_flash(request.app.state.sessions, admin),
    )


@router.post("/maintenance/cleanup")
async def cleanup(request: Request, admin: Admin) -> Response:
    """Run the retention sweep now and say what it removed."""
    form = await _form(request)
    if not _csrf_ok(admin, form):
        return forbidden_csrf(request, admin)
    state = request.app.state
    report = await sweep(
        sessions=state.sessions, storage=state.storage, settings=state.settings, backends=state.jobs.backends
    )
    summary = (
        f"Cleanup: expired {report.expired_jobs} job(s), removed {report.deleted_files} file(s), "
        f"{report.orphan_files} orphan file(s) and {report.backend_items} backend cache item(s)."
    )
    async with state.sessions() as session, session.begin():
        audit.record(
            session=session,
            actor="admin",
            action="admin.cleanup",
            handle=None,
            expired_jobs=report.expired_jobs,
            deleted_files=report.deleted_files,
            orphan_files=report.orphan_files,
        )
    await service.set_flash(state.sessions, admin, summary)
    return redirect(request, "/admin/maintenance")


@router.get("/accounts")
async def accounts(request: Request, admin: Admin) -> Response:
    """Per-account statistics of every Codex backend."""
    names: list[str] = getattr(request.app.state, "codex_backends", [])
    if not names:
        raise NotFound("No Codex backend is configured.")
    async with request.app.state.sessions() as session:
        backends = [{"name": n, "rows": await usage.stats(session, backend=n, now=utcnow())} for n in names]
    return page(
        request, "accounts.html", admin=admin, title="Codex accounts", active="/admin/accounts", backends=backends
    )


@router.get("/audit")
async def audit_page(request: Request, admin: Admin) -> Response:
    """The newest audit events: admin actions, key changes, refusals."""
    async with request.app.state.sessions() as session:
        events = await audit.events(session=session, limit=200)
    return page(request, "audit.html", admin=admin, title="Audit", active="/admin/audit", events=events)


__all__ = ["ImagegateError", "router", "static"]
