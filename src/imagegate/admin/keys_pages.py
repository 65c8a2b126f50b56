"""The admin pages about keys: list, create (the secret shown once), edit limits, enable/disable/delete, and the
playground that runs a generation as a chosen key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import FormData, UploadFile

from imagegate.admin import queries, service
from imagegate.admin.web import (
    Admin,
    confirm_page,
    confirmed,
    csrf_ok,
    error_message,
    forbidden_csrf,
    form_value,
    page,
    read_form,
    redirect,
)
from imagegate.db import utcnow
from imagegate.errors import ImagegateError, InvalidRequest, NotFound
from imagegate.jobs import queries as job_queries
from imagegate.jobs import service as jobs
from imagegate.jobs import spend
from imagegate.jobs.models import Job
from imagegate.jobs.requests import QUALITIES, GenerationRequest, Reference
from imagegate.keys import service as keys
from imagegate.keys.auth import admit_by_handle
from imagegate.keys.limits import Periods
from imagegate.keys.models import SCOPES, ApiKey
from imagegate.keys.service import KeyLimits

router = APIRouter(prefix="/admin", include_in_schema=False)
# How long a rotated key's old secret keeps working; a day by default, as `imagegate keys rotate`.
GRACE_CHOICES = ((0, "none: the old secret stops now"), (3600, "1 hour"), (86400, "24 hours"), (604800, "7 days"))
DEFAULT_GRACE_SECONDS = 86400


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
        monthly_budget_usd=_budget_from(form),
    )


def _budget_from(form: FormData) -> float | None:
    """The monthly budget field: dollars above 0, or empty for none."""
    value = form_value(form, "monthly_budget_usd")
    if not value:
        return None
    dollars = keys.parse_budget(value)
    if dollars is None:
        raise InvalidRequest(
            f"monthly budget must be dollars above 0 (at most {keys.MAX_LIMIT}), like 12.50, or empty.",
            param="monthly_budget_usd",
        )
    return dollars


def _revealed(flash: str | None) -> tuple[dict[str, str] | None, str | None]:
    """A new secret waiting in the one-time message (shown once), and any other message."""
    if flash and flash.startswith("newkey:"):
        _tag, name, token, webhook_secret = [*flash.split(":", 3), ""][:4]
        return {"name": name, "token": token, "webhook_secret": webhook_secret}, None
    return None, flash


async def _reveal(request: Request, admin: Admin, name: str, token: str, webhook_secret: str = "") -> None:
    # The secrets travel only through this session's one-time message, never in a URL.
    message = f"newkey:{name.replace(':', ' ')}:{token}:{webhook_secret}"
    await service.set_flash(request.app.state.sessions, admin, message)


def _status(key: ApiKey, now: datetime) -> str:
    if not key.enabled:
        return "disabled"
    return "expired" if _expired(key, now) else "enabled"


def _expiry_from(form: FormData) -> datetime | None:
    """The expiry date field: None (never) when empty; InvalidRequest for a bad or past date."""
    expires = form_value(form, "expires")
    try:
        expires_at = datetime.fromisoformat(expires).replace(tzinfo=UTC) if expires else None
    except ValueError:
        raise InvalidRequest(f"{expires!r} is not a date; use YYYY-MM-DD.", param="expires") from None
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidRequest("The expiry date is in the past.", param="expires")
    return expires_at


@router.get("/keys")
async def keys_page(request: Request, admin: Admin, name: Annotated[str, Query(max_length=200)] = "") -> Response:
    """Every key with its status and use; a new key's secret once, right after creating it."""
    sessions = request.app.state.sessions
    revealed, flash = _revealed(await service.take_flash(sessions, admin))
    wanted = name.strip()
    async with sessions() as session:
        rows = await keys.list_keys(session=session)
        totals = await job_queries.key_totals(session)
    now = utcnow()
    listed = [
        {
            "key": key,
            "status": _status(key, now),
            "requests": totals.get(key.id, (0, 0))[0],
            "images": totals.get(key.id, (0, 0))[1],
        }
        for key in rows
        if wanted.casefold() in key.name.casefold() or wanted == key.handle
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
        name_filter=wanted,
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
    expires_at = _expiry_from(form)
    async with request.app.state.sessions() as session, session.begin():
        key, token = await keys.create_key(
            session=session, name=name, expires_at=expires_at, limits=_limits_from(form), actor="admin"
        )
    await _reveal(request, admin, name, token, key.webhook_secret or "")
    return redirect(request, "/admin/keys")


@router.get("/keys/{handle}")
async def key_page(handle: str, request: Request, admin: Admin) -> Response:
    """One key: its use against its quotas, its requests over 14 days, rotation, expiry and limits."""
    revealed, flash = _revealed(await service.take_flash(request.app.state.sessions, admin))
    now = utcnow()
    async with request.app.state.sessions() as session:
        key = await keys.get_by_handle(session=session, handle=handle)
        usage = await queries.key_usage(session, key, now)
        spend_days = await spend.cost_per_day(
            session, request.app.state.settings.prices, now=now, days=queries.CHART_DAYS, key_id=key.id
        )
        spend_month = await spend.cost_since(
            session, request.app.state.settings.prices, since=Periods.at(now).month_start, key_id=key.id
        )
    grace_ends = key.previous_token_expires_at
    return page(
        request,
        "key.html",
        admin=admin,
        title=f"{key.name} ({handle})",
        active="/admin/keys",
        key=key,
        key_status=_status(key, now),
        usage=usage,
        spend_days=spend_days,
        spend_month=spend_month,
        grace_ends=grace_ends if grace_ends and grace_ends > now else None,
        graces=GRACE_CHOICES,
        default_grace=DEFAULT_GRACE_SECONDS,
        scopes=SCOPES,
        revealed=revealed,
        flash=flash,
    )


@router.post("/keys/{handle}/rotate")
async def rotate_key(handle: str, request: Request, admin: Admin) -> Response:
    """A new secret for the key, shown once; the old one keeps working for the chosen grace period."""
    form = await read_form(request)
    if not csrf_ok(admin, form):
        return forbidden_csrf(request, admin)
    chosen = form_value(form, "grace") or str(DEFAULT_GRACE_SECONDS)
    seconds = next((s for s, _label in GRACE_CHOICES if str(s) == chosen), None)
    if seconds is None:
        raise InvalidRequest("Choose one of the offered grace periods.", param="grace")
    async with request.app.state.sessions() as session, session.begin():
        key, token = await keys.rotate_key(
            session=session, handle=handle, grace=timedelta(seconds=seconds), actor="admin"
        )
    await _reveal(request, admin, key.name, token)
    return redirect(request, f"/admin/keys/{handle}")


@router.post("/keys/{handle}")
async def update_key(handle: str, request: Request, admin: Admin) -> Response:
    """Save a key's name and limits."""
    form = await read_form(request)
    if not csrf_ok(admin, form):
        return forbidden_csrf(request, admin)
    limits = _limits_from(form)
    limits.name = form_value(form, "name") or handle
    if "expires" in form:
        limits.expires_at = _expiry_from(form)
    async with request.app.state.sessions() as session, session.begin():
        await keys.update_key(session=session, handle=handle, limits=limits, actor="admin")
    await service.set_flash(request.app.state.sessions, admin, f"Saved {handle}.")
    return redirect(request, f"/admin/keys/{handle}")


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


PLAYGROUND_FIELDS = ("key", "model", "prompt", "size", "quality", "count", "output_format")


@router.get("/playground")
async def playground(request: Request, admin: Admin, from_: Annotated[str, Query(alias="from")] = "") -> Response:
    """A form to run a generation as a chosen key; ?from=<job id> fills it in from that job (re-run)."""
    source = await _source_job(request, from_) if from_ else None
    chosen = (
        {
            "key": source.key_handle,
            "model": source.model,
            "prompt": source.prompt,
            "size": source.size,
            "quality": source.quality,
            "count": str(source.count),
            "output_format": source.output_format,
        }
        if source
        else {}
    )
    return await _playground(request, admin, chosen, source=source)


async def _source_job(request: Request, job_id: str) -> Job:
    async with request.app.state.sessions() as session:
        job = await job_queries.any_job(session, job_id)
    if job is None:
        raise NotFound(f"No job {job_id}.")
    return job


async def _playground(
    request: Request,
    admin: Admin,
    chosen: dict[str, str],
    *,
    source: Job | None = None,
    error: ImagegateError | None = None,
) -> Response:
    """The playground form with these values (a re-run's, or what was posted when it was refused)."""
    async with request.app.state.sessions() as session:
        now = utcnow()
        enabled = [k for k in await keys.list_keys(session=session) if k.enabled and not _expired(k, now)]
    backend_set = request.app.state.jobs.backends
    models = [backend_set.default_model, *sorted(m for m in backend_set.models if m != backend_set.default_model)]
    defaults = {"size": "512x512", "quality": "auto", "count": "1", "output_format": "png", "prompt": ""}
    response = page(
        request,
        "playground.html",
        admin=admin,
        status=error.status if error else 200,
        title="Playground",
        active="/admin/playground",
        keys=enabled,
        models=models,
        qualities=QUALITIES,
        chosen={**defaults, **{k: v for k, v in chosen.items() if v}},
        source=source,
        error=error_message(error) if error else None,
    )
    if error is not None:
        response.headers.update(error.headers)
    return response


def _expired(key: ApiKey, now: datetime) -> bool:
    return key.expires_at is not None and key.expires_at <= now


@router.post("/playground")
async def run_playground(request: Request, admin: Admin) -> Response:
    """Submit the generation as the chosen key (its limits apply) and show the job; a refusal keeps the form."""
    form = await read_form(request)
    if not csrf_ok(admin, form):
        return forbidden_csrf(request, admin)
    try:
        job = await _submit_playground(request, form)
    except ImagegateError as error:
        if error.status >= 500 and error.status not in (503, 507):
            raise
        return await _playground(
            request, admin, {name: form_value(form, name) for name in PLAYGROUND_FIELDS}, error=error
        )
    return redirect(request, f"/admin/jobs/{job.id}")


async def _submit_playground(request: Request, form: FormData) -> Job:
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
    return await jobs.submit(ctx=request.app.state.jobs, request=request_, key=key)
