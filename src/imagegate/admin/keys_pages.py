"""The admin pages about keys: list, create (the secret shown once), edit limits, enable/disable/delete, and the
playground that runs a generation as a chosen key."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from starlette.datastructures import FormData, UploadFile

from imagegate.admin import queries, service
from imagegate.admin.web import (
    Admin,
    confirm_page,
    confirmed,
    csrf_ok,
    forbidden_csrf,
    form_value,
    page,
    read_form,
    redirect,
)
from imagegate.db import utcnow
from imagegate.errors import InvalidRequest, NotFound
from imagegate.jobs import service as jobs
from imagegate.jobs.requests import QUALITIES, GenerationRequest, Reference
from imagegate.keys import service as keys
from imagegate.keys.auth import admit_by_handle
from imagegate.keys.models import SCOPES, ApiKey
from imagegate.keys.service import KeyLimits

router = APIRouter(prefix="/admin", include_in_schema=False)


def _limits_from(form: FormData) -> KeyLimits:
    def number(name: str) -> int | None:
        value = form_value(form, name)
        if not value:
            return None
        number = keys.parse_limit(value)
        if number is None:
            raise InvalidRequest(
                f"{name.replace('_', ' ')} must be a whole number of at least 1 (at most {keys.MAX_LIMIT}), or empty.",
                param=name,
            )
        return number

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
        _tag, name, token, webhook_secret = [*flash.split(":", 3), ""][:4]
        revealed, flash = {"name": name, "token": token, "webhook_secret": webhook_secret}, None
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
    form = await read_form(request)
    if not csrf_ok(admin, form):
        return forbidden_csrf(request, admin)
    name = form_value(form, "name")
    if not name:
        raise InvalidRequest("A key needs a name.")
    expires = form_value(form, "expires")
    try:
        expires_at = datetime.fromisoformat(expires).replace(tzinfo=UTC) if expires else None
    except ValueError:
        raise InvalidRequest(f"{expires!r} is not a date; use YYYY-MM-DD.") from None
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidRequest("The expiry date is in the past.")
    async with request.app.state.sessions() as session, session.begin():
        key, token = await keys.create_key(
            session=session, name=name, expires_at=expires_at, limits=_limits_from(form), actor="admin"
        )
    # The secret travels only through this session's one-time message, never in a URL.
    await service.set_flash(
        request.app.state.sessions, admin, f"newkey:{name.replace(':', ' ')}:{token}:{key.webhook_secret}"
    )
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
    form = await read_form(request)
    if not csrf_ok(admin, form):
        return forbidden_csrf(request, admin)
    limits = _limits_from(form)
    limits.name = form_value(form, "name") or handle
    async with request.app.state.sessions() as session, session.begin():
        await keys.update_key(session=session, handle=handle, limits=limits, actor="admin")
    await service.set_flash(request.app.state.sessions, admin, f"Saved {handle}.")
    return redirect(request, "/admin/keys")


@router.post("/keys/{handle}/{action}")
async def key_action(handle: str, action: str, request: Request, admin: Admin) -> Response:
    """Enable, disable or delete a key (deleting after a confirmation step)."""
    form = await read_form(request)
    if not csrf_ok(admin, form):
        return forbidden_csrf(request, admin)
    if action == "delete" and not confirmed(form):
        async with request.app.state.sessions() as session:
            key = await keys.get_by_handle(session=session, handle=handle)
        return confirm_page(
            request,
            admin,
            heading=f"Delete key {key.name} ({handle})?",
            message="Its secret stops working at once and cannot be restored; its jobs stay in the history. "
            "Disabling it instead can be undone.",
            action=f"/admin/keys/{handle}/delete",
            button="Delete key",
            back="/admin/keys",
        )
    async with request.app.state.sessions() as session, session.begin():
        if action in ("enable", "disable"):
            await keys.set_enabled(session=session, handle=handle, enabled=action == "enable", actor="admin")
        elif action == "delete":
            await keys.delete_key(session=session, handle=handle, actor="admin")
        else:
            raise NotFound(f"No such action: {action}.")
    await service.set_flash(request.app.state.sessions, admin, f"{action.capitalize()}d {handle}.")
    return redirect(request, "/admin/keys")


@router.get("/playground")
async def playground(request: Request, admin: Admin) -> Response:
    """A form to run a generation as a chosen key."""
    async with request.app.state.sessions() as session:
        now = utcnow()
        enabled = [k for k in await keys.list_keys(session=session) if k.enabled and not _expired(k, now)]
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


def _expired(key: ApiKey, now: datetime) -> bool:
    return key.expires_at is not None and key.expires_at <= now


@router.post("/playground")
async def run_playground(request: Request, admin: Admin) -> Response:
    """Submit the generation as the chosen key (its limits apply) and show the job."""
    form = await read_form(request)
    if not csrf_ok(admin, form):
        return forbidden_csrf(request, admin)
    key = await admit_by_handle(request, form_value(form, "key"))
    references = []
    for position, upload in enumerate(form.getlist("references")):
        if isinstance(upload, UploadFile) and upload.filename:
            references.append(Reference(upload.file, f"references[{position}]"))
    count = keys.parse_limit(form_value(form, "count") or "1")
    if count is None:
        raise InvalidRequest("count must be a whole number of at least 1.", param="count")
    request_ = GenerationRequest(
        prompt=form_value(form, "prompt"),
        model=form_value(form, "model") or None,
        size=form_value(form, "size") or "auto",
        quality=form_value(form, "quality") or "auto",
        count=count,
        output_format=form_value(form, "output_format") or "png",
        references=tuple(references),
    )
    job = await jobs.submit(ctx=request.app.state.jobs, request=request_, key=key)
    return redirect(request, f"/admin/jobs/{job.id}")
