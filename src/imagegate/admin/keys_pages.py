"""The admin pages about keys: list, create (the secret shown once), edit limits, enable/disable/delete, and the
playground that runs a generation as a chosen key."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import FormData, UploadFile

from imagegate.admin import queries, service
from imagegate.admin.key_forms import KeyFields, blank_fields, expiry_from, fields_from, fields_of, limits_from
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
from imagegate.services import services

router = APIRouter(prefix="/admin", include_in_schema=False)
# How long a rotated key's old secret keeps working; a day by default, as `imagegate keys rotate`.
GRACE_CHOICES = ((0, "none: the old secret stops now"), (3600, "1 hour"), (86400, "24 hours"), (604800, "7 days"))
DEFAULT_GRACE_SECONDS = 86400


def _revealed(flash: str | None) -> tuple[dict[str, str] | None, str | None]:
    """A new secret waiting in the one-time message (shown once), and any other message."""
    if flash and flash.startswith("newkey:"):
        _tag, name, token, webhook_secret = [*flash.split(":", 3), ""][:4]
        return {"name": name, "token": token, "webhook_secret": webhook_secret}, None
    return None, flash


async def _reveal(request: Request, admin: Admin, name: str, token: str, webhook_secret: str = "") -> None:
    # The secrets travel only through this session's one-time message, never in a URL.
    message = f"newkey:{name.replace(':', ' ')}:{token}:{webhook_secret}"
    await service.set_flash(sessions=services(request).sessions, admin=admin, message=message)


def _status(key: ApiKey, now: datetime) -> str:
    if not key.enabled:
        return "disabled"
    return "expired" if _expired(key, now) else "enabled"


@router.get("/keys")
async def keys_page(request: Request, admin: Admin, name: Annotated[str, Query(max_length=200)] = "") -> Response:
    """Every key with its status and use; a new key's secret once, right after creating it."""
    revealed, flash = _revealed(await service.take_flash(admin=admin))
    return await _keys_listing(request, admin, name_filter=name.strip(), revealed=revealed, flash=flash)


async def _keys_listing(
    request: Request,
    admin: Admin,
    *,
    name_filter: str = "",
    fields: KeyFields | None = None,
    error: ImagegateError | None = None,
    revealed: dict[str, str] | None = None,
    flash: str | None = None,
) -> Response:
    """The keys page; after a refused create, with what was posted and why it was refused."""
    async with services(request).sessions() as session:
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
        if name_filter.casefold() in key.name.casefold() or name_filter == key.handle
    ]
    return _with_error_headers(
        page(
            request,
            "keys.html",
            admin=admin,
            status=error.status if error else 200,
            title="Keys",
            active="/admin/keys",
            keys=listed,
            revealed=revealed,
            flash=flash,
            form_error=error_message(error) if error else None,
            invalid=error.param if error else None,
            scopes=SCOPES,
            fields=fields or blank_fields(),
            name_filter=name_filter,
        ),
        error,
    )


def _with_error_headers(response: Response, error: ImagegateError | None) -> Response:
    if error is not None:
        response.headers.update(error.headers)
    return response


def _shown_again(error: ImagegateError) -> bool:
    """A refusal the form can show beside the input (bad input, a limit, an outage); other errors propagate."""
    return error.status < 500 or error.status in (503, 507)


@router.post("/keys")
async def create_key(request: Request, admin: Admin) -> Response:
    """Create a key; its secret is shown once on the next page. A refusal keeps the form's input."""
    form = await read_form(request)
    if not csrf_ok(admin, form):
        return forbidden_csrf(request, admin)
    try:
        key, token = await _create(request, form)
    except ImagegateError as error:
        if not _shown_again(error):
            raise
        return await _keys_listing(request, admin, fields=fields_from(form), error=error)
    await _reveal(request, admin, key.name, token, key.webhook_secret or "")
    return redirect(request, "/admin/keys")


async def _create(request: Request, form: FormData) -> tuple[ApiKey, str]:
    name = form_value(form, "name")
    if not name:
        raise InvalidRequest("A key needs a name.", param="name")
    expires_at = expiry_from(form)
    limits = limits_from(form)
    async with services(request).sessions() as session, session.begin():
        return await keys.create_key(session=session, name=name, expires_at=expires_at, limits=limits, actor="admin")


@router.get("/keys/{handle}")
async def key_page(handle: str, request: Request, admin: Admin) -> Response:
    """One key: its use against its quotas, its requests over 14 days, rotation, expiry and limits."""
    revealed, flash = _revealed(await service.take_flash(admin=admin))
    return await _key_detail(request, admin, handle, revealed=revealed, flash=flash)


async def _key_detail(
    request: Request,
    admin: Admin,
    handle: str,
    *,
    fields: KeyFields | None = None,
    error: ImagegateError | None = None,
    revealed: dict[str, str] | None = None,
    flash: str | None = None,
) -> Response:
    """A key's page; after a refused change, with what was posted and why it was refused."""
    now = utcnow()
    async with services(request).sessions() as session:
        key = await keys.get_by_handle(session=session, handle=handle)
        usage = await queries.key_usage(session, key, now)
        spend_days = await spend.cost_per_day(session, now=now, days=queries.CHART_DAYS, key_id=key.id)
        spend_month = await spend.known_cost_since(session, since=Periods.at(now).month_start, key_id=key.id)
    grace_ends = key.previous_token_expires_at
    return _with_error_headers(
        page(
            request,
            "key.html",
            admin=admin,
            status=error.status if error else 200,
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
            fields=fields or fields_of(key),
            revealed=revealed,
            flash=flash,
            # A refused edit says so beside the form; a refused rotation (a tampered choice) at the top.
            form_error=error_message(error) if error and fields else None,
            error=error_message(error) if error and not fields else None,
            invalid=error.param if error else None,
        ),
        error,
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
        refused = InvalidRequest("Choose one of the offered grace periods.", param="grace")
        return await _key_detail(request, admin, handle, error=refused)
    async with services(request).sessions() as session, session.begin():
        key, token = await keys.rotate_key(
            session=session, handle=handle, grace=timedelta(seconds=seconds), actor="admin"
        )
    await _reveal(request, admin, key.name, token)
    return redirect(request, f"/admin/keys/{handle}")


@router.post("/keys/{handle}")
async def update_key(handle: str, request: Request, admin: Admin) -> Response:
    """Save a key's name and limits. A refusal keeps the form's input."""
    form = await read_form(request)
    if not csrf_ok(admin, form):
        return forbidden_csrf(request, admin)
    try:
        await _update(request, handle, form)
    except ImagegateError as error:
        if not _shown_again(error) or isinstance(error, NotFound):
            raise
        return await _key_detail(request, admin, handle, fields=fields_from(form), error=error)
    await service.set_flash(sessions=services(request).sessions, admin=admin, message=f"Saved {handle}.")
    return redirect(request, f"/admin/keys/{handle}")


async def _update(request: Request, handle: str, form: FormData) -> None:
    limits = limits_from(form)
    limits.name = form_value(form, "name") or handle
    if "expires" in form:
        limits.expires_at = expiry_from(form)
    async with services(request).sessions() as session, session.begin():
        await keys.update_key(session=session, handle=handle, limits=limits, actor="admin")


@router.post("/keys/{handle}/{action}")
async def key_action(handle: str, action: str, request: Request, admin: Admin) -> Response:
    """Enable, disable or delete a key (deleting after a confirmation step)."""
    form = await read_form(request)
    if not csrf_ok(admin, form):
        return forbidden_csrf(request, admin)
    if action == "delete" and not confirmed(form):
        async with services(request).sessions() as session:
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
    async with services(request).sessions() as session, session.begin():
        if action in ("enable", "disable"):
            await keys.set_enabled(session=session, handle=handle, enabled=action == "enable", actor="admin")
        elif action == "delete":
            await keys.delete_key(session=session, handle=handle, actor="admin")
        else:
            raise NotFound(f"No such action: {action}.")
    await service.set_flash(
        sessions=services(request).sessions, admin=admin, message=f"{action.capitalize()}d {handle}."
    )
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
    async with services(request).sessions() as session:
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
    dropped_references: int = 0,
) -> Response:
    """The playground form with these values (a re-run's, or what was posted when it was refused)."""
    async with services(request).sessions() as session:
        now = utcnow()
        enabled = [k for k in await keys.list_keys(session=session) if k.enabled and not _expired(k, now)]
    backend_set = services(request).jobs.backends
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
        invalid=error.param if error else None,
        dropped_references=dropped_references,
    )
    return _with_error_headers(response, error)


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
        chosen = {name: form_value(form, name) for name in PLAYGROUND_FIELDS}
        return await _playground(request, admin, chosen, error=error, dropped_references=len(_uploads(form)))
    return redirect(request, f"/admin/jobs/{job.id}")


def _uploads(form: FormData) -> list[UploadFile]:
    """The reference images posted (a file input left empty sends a nameless part)."""
    return [upload for upload in form.getlist("references") if isinstance(upload, UploadFile) and upload.filename]


async def _submit_playground(request: Request, form: FormData) -> Job:
    key = await admit_by_handle(request, form_value(form, "key"))
    references = [Reference(upload.file, f"references[{i}]") for i, upload in enumerate(_uploads(form))]
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
    return await jobs.submit(ctx=services(request).jobs, request=request_, key=key)
