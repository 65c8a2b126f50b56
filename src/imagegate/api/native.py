"""The native API (codex-image-service compatible): /v1/images/generate and /v1/images/jobs."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from imagegate.api.common import FastJSONResponse, base_url, job_context
from imagegate.api.headers import POLL_RETRY_AFTER
from imagegate.backends.base import describer, sizes_of
from imagegate.errors import QueueFull
from imagegate.images import decode_base64
from imagegate.jobs import idempotency, service
from imagegate.jobs.failures import job_error
from imagegate.jobs.models import Job, JobStatus
from imagegate.jobs.requests import GenerationRequest, Reference
from imagegate.jobs.service import JobContext
from imagegate.keys import limits
from imagegate.keys.auth import CallerKey, scoped
from imagegate.keys.models import ApiKey
from imagegate.webhooks import service as webhooks

router = APIRouter(prefix="/v1/images", tags=["native"])
MAX_POLL_WAIT_SECONDS = 60


class GenerateBody(BaseModel):
    """The body of POST /v1/images/generate and POST /v1/images/jobs; unknown fields are ignored, as the original."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(description="What to draw.")
    model: str | None = Field(default=None, description="A routed model name; the default model if omitted.")
    size: str = Field(default="auto", description="WIDTHxHEIGHT, or auto.")
    quality: str = Field(default="auto", description="auto, low, medium, high (standard, hd for DALL-E).")
    count: int = Field(default=1, description="How many images.")
    output_format: str = Field(default="png", description="png, jpeg or webp.")
    reference_images_base64: list[str] | None = Field(default=None, description="Reference images (edit mode).")
    reference_image_base64: str | None = Field(
        default=None, description="One reference image (older alias; the plural field wins when both are sent)."
    )
    mask_base64: str | None = Field(
        default=None, description="A PNG mask, transparent where the first reference image may change (edit mode)."
    )
    webhook_url: str | None = Field(default=None, description="Where to POST the job's signed state changes.")
    webhook_events: list[str] | None = Field(
        default=None, description="Any of queued, running, succeeded, failed, cancelled; the final three by default."
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def render_job(job: Job, base: str) -> dict[str, Any]:
    """A job as the native API shows it."""
    expires_at = _iso(job.expires_at)
    return {
        "id": job.id,
        "object": "image.job",
        "status": job.status,
        "model": job.model,
        "backend": job.backend,
        "prompt": job.prompt,
        "size": job.size,
        "width": job.width,
        "height": job.height,
        "quality": job.quality,
        "output_format": job.output_format,
        "count": job.count,
        "image_count": job.image_count,
        "reference_image_count": sum(1 for item in job.inputs if item.role == "reference"),
        "cancel_requested": job.cancel_requested,
        "request_id": job.request_id,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "expires_at": expires_at,
        "images": [
            {
                "url": f"{base}/generated/{image.name}",
                "name": image.name,
                "width": image.width,
                "height": image.height,
                "format": image.format,
                "bytes": image.bytes,
                "sha256": image.sha256,
                "expires_at": expires_at,
            }
            for image in job.live_images
        ],
        # A string, as codex-image-service's clients read it; the machine-readable code beside it.
        "error": (job.error_message or job.error_code) if job.error_code else None,
        "error_code": job.error_code,
        "status_url": f"{base}/v1/images/jobs/{job.id}",
    }


async def _references(body: GenerateBody) -> tuple[Reference, ...]:
    """The decoded reference images: the plural field wins over the singular alias, as in the original."""
    if body.reference_images_base64 is not None:
        items = [(f"reference_images_base64[{i}]", v) for i, v in enumerate(body.reference_images_base64)]
    elif body.reference_image_base64 is not None:
        items = [("reference_image_base64", body.reference_image_base64)]
    else:
        items = []
    decoded = []
    for param, value in items:
        data = await asyncio.to_thread(decode_base64, value, param=param)
        decoded.append(Reference(data, param))
    return tuple(decoded)


async def _mask(body: GenerateBody) -> Reference | None:
    if body.mask_base64 is None:
        return None
    return Reference(await asyncio.to_thread(decode_base64, body.mask_base64, param="mask_base64"), "mask_base64")


def _finished_response(job: Job, base: str) -> JSONResponse:
    """A finished job: 200 when it succeeded, else the job with its error's status (and `detail`, as FastAPI)."""
    if job.status == JobStatus.SUCCEEDED:
        return FastJSONResponse(render_job(job, base))
    error = job_error(job, unrecorded="The job did not finish.")
    body = render_job(job, base)
    body["error"], body["error_code"], body["detail"] = error.message, error.code, error.message
    return FastJSONResponse(body, status_code=error.status, headers=error.headers or None)


def _accepted(job: Job, base: str, *, preference_applied: bool) -> JSONResponse:
    headers = {"Location": f"{base}/v1/images/jobs/{job.id}", "Retry-After": POLL_RETRY_AFTER}
    if preference_applied:
        headers["Preference-Applied"] = "respond-async"
    return FastJSONResponse(render_job(job, base), status_code=202, headers=headers)


async def _submit(
    body: GenerateBody, request: Request, key: ApiKey, idempotency_key: str | None, surface: str
) -> service.Submitted:
    """The body as a job, queued once per Idempotency-Key."""
    generation = GenerationRequest(
        prompt=body.prompt,
        model=body.model,
        size=body.size,
        quality=body.quality,
        count=body.count,
        output_format=body.output_format,
        references=await _references(body),
        mask=await _mask(body),
        webhook_url=body.webhook_url,
        webhook_events=body.webhook_events,
    )
    return await service.submit_once(
        ctx=job_context(request),
        request=generation,
        key=key,
        idempotency_key=idempotency_key,
        # Only a request with an Idempotency-Key is compared by it: no canonical JSON of every body (and its images).
        fingerprint=idempotency.request_hash(surface, body.model_dump(exclude_unset=True))
        if idempotency_key is not None
        else "",
    )


@router.post("/generate", responses={202: {"description": "Accepted; poll status_url."}})
async def generate(
    body: GenerateBody,
    request: Request,
    key: CallerKey,
    prefer: Annotated[str | None, Header()] = None,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Response:
    """Queue a generation and wait for it up to the wait timeout (or answer 202 at once with Prefer)."""
    submitted = await _submit(body, request, key, idempotency_key, "native.generate")
    response = await _respond(job_context(request), submitted.job, key, base_url(request), prefer)
    if submitted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@router.post("/jobs", status_code=202, responses={202: {"description": "Accepted; poll status_url."}})
async def submit_job(
    body: GenerateBody,
    request: Request,
    key: CallerKey,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Response:
    """Queue a generation and answer 202 at once (codex-image-service's async submit)."""
    try:
        submitted = await _submit(body, request, key, idempotency_key, "native.jobs")
    except QueueFull as full:
        full.status = 503  # what the original answers on this endpoint, and what its callers retry on
        raise
    response = _accepted(submitted.job, base_url(request), preference_applied=False)
    if submitted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


async def _respond(ctx: JobContext, job: Job, key: ApiKey, base: str, prefer: str | None) -> JSONResponse:
    respond_async = prefer is not None and "respond-async" in prefer.lower()
    if respond_async or ctx.settings.wait_timeout_seconds == 0:
        return _accepted(job, base, preference_applied=respond_async)
    job = await service.wait_until_finished(
        ctx=ctx, job_id=job.id, key=key, timeout=ctx.settings.wait_timeout_seconds, job=job
    )
    if not job.is_finished:
        return _accepted(job, base, preference_applied=False)
    return _finished_response(job, base)


@router.get("/models")
async def list_models(request: Request, key: CallerKey) -> dict[str, Any]:
    """The models this key may use: each one's backend, the sizes it makes, and whether it can describe images."""
    ctx = job_context(request)
    backends = ctx.backends
    data = []
    for name, backend_name in limits.visible_models(key, backends.models):
        backend = backends.backends[backend_name]
        sizes = sizes_of(backend, name)
        data.append(
            {
                "id": name,
                "backend": backend_name,
                "default": name == backends.default_model,
                "sizes": None if sizes is None else list(sizes),
                "max_side": ctx.settings.max_image_side,
                "can_describe": describer(backend) is not None,
            }
        )
    return {"object": "list", "data": data}


@router.get("/jobs")
async def list_jobs(
    request: Request,
    key: Annotated[ApiKey, Depends(scoped("read"))],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The caller's jobs, newest first."""
    page = await service.list_jobs(ctx=job_context(request), key=key, limit=limit, cursor=cursor)
    base = base_url(request)
    return {
        "object": "list",
        "data": [render_job(job, base) for job in page.jobs],
        "has_more": page.next_cursor is not None,
        "next_cursor": page.next_cursor,
    }


@router.get("/jobs/{job_id}")
async def get_job(
    job_id: str,
    request: Request,
    key: Annotated[ApiKey, Depends(scoped("read"))],
    wait: Annotated[
        float, Query(ge=0, le=MAX_POLL_WAIT_SECONDS, description="Seconds to wait for the job to finish first.")
    ] = 0,
) -> dict[str, Any]:
    """One of the caller's jobs, with its webhook deliveries and their attempts; with wait, a long poll."""
    ctx = job_context(request)
    job = await service.get_job(ctx=ctx, job_id=job_id, key=key)
    if wait and not job.is_finished:
        job = await service.wait_until_finished(ctx=ctx, job_id=job_id, key=key, timeout=wait, job=job)
    deliveries: list[webhooks.DeliveryView] = []
    if job.webhook is not None:  # a job without a webhook has no deliveries to read
        async with ctx.sessions() as session:
            deliveries = await webhooks.deliveries_of(session, job.id)
    return {**render_job(job, base_url(request)), "webhooks": webhooks.render_deliveries(deliveries)}


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(
    job_id: str, request: Request, key: Annotated[ApiKey, Depends(scoped("generate"))]
) -> dict[str, Any]:
    """Cancel a queued or running job."""
    job = await service.cancel(ctx=job_context(request), job_id=job_id, key=key)
    return render_job(job, base_url(request))


@router.delete("/jobs/{job_id}")
async def delete_job(
    job_id: str, request: Request, key: Annotated[ApiKey, Depends(scoped("delete"))]
) -> dict[str, Any]:
    """Delete a finished or queued job and its files."""
    await service.delete_job(ctx=job_context(request), job_id=job_id, key=key, by="caller")
    return {"id": job_id, "object": "image.job", "deleted": True}
