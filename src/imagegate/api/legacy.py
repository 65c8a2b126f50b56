"""The openai-image-gen surface: POST /generate, GET and DELETE /images/<id>, in that project's shapes.

A translator only, like the other surfaces: a request becomes a GenerationRequest and a job through
submit_once (keys, limits, Idempotency-Key, queue, history, storage and retention as everywhere); a finished
job is rendered as the original answered. Its clients send no key: IMAGEGATE_OIG_ANONYMOUS_KEY names the key
their keyless requests act as.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import update

from imagegate.api.common import FastJSONResponse, job_context
from imagegate.api.errors import HttpError
from imagegate.api.files import stored_response
from imagegate.api.headers import POLL_RETRY_AFTER
from imagegate.api.legacy_shapes import (
    LegacyError,
    LegacyRequest,
    legacy_error,
    parse_json,
    requested_model,
    require_configured,
    validate_body,
)
from imagegate.db import utcnow
from imagegate.images import CONTENT_TYPES
from imagegate.jobs import idempotency, queries, service
from imagegate.jobs.failures import job_error
from imagegate.jobs.models import Job, JobImage, JobStatus
from imagegate.jobs.requests import GenerationRequest
from imagegate.jobs.service import JobContext
from imagegate.keys import service as keys_service
from imagegate.keys.auth import BEARER_SCHEME, admit, require_key, scoped
from imagegate.keys.models import ApiKey
from imagegate.services import services

router = APIRouter(tags=["openai-image-gen"])
# Where errors are rendered in this surface's envelope on the main listener ("/generated/" stays native).
PREFIXES = ("/generate", "/images/")
SURFACE = "oig"
JSON_TYPES = ("application/json",)


async def caller_key(
    request: Request, _documented: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER_SCHEME)] = None
) -> ApiKey:
    """The bearer key when one is sent; otherwise the configured anonymous key, or 401 when there is none."""
    handle = services(request).settings.oig_anonymous_key
    if handle is None or "authorization" in request.headers:
        return await require_key(request)
    return await admit(request, lambda session: keys_service.verify_handle(session=session, handle=handle))


def caller_with_scope(scope: str) -> Callable[[Request, ApiKey], Awaitable[ApiKey]]:
    """A dependency: caller_key, which must have the scope (403 INSUFFICIENT_SCOPE otherwise)."""
    check = scoped(scope)

    async def dependency(request: Request, key: Annotated[ApiKey, Depends(caller_key)]) -> ApiKey:
        return await check(request, key)

    return dependency


ReadingKey = Annotated[ApiKey, Depends(caller_with_scope("read"))]
DeletingKey = Annotated[ApiKey, Depends(caller_with_scope("delete"))]


@router.post("/generate", responses={202: {"description": "Still generating; the job goes on."}})
async def generate(
    request: Request,
    key: Annotated[ApiKey, Depends(caller_key)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Response:
    """Generate images and answer when they are saved, as openai-image-gen did."""
    ctx = job_context(request)
    sent_json = _is_json(request.headers.get("content-type", ""))
    data, is_json = parse_json(await request.body()) if sent_json else (None, False)
    routed = ctx.backends.models
    require_configured(requested_model(data), routed)  # before anything else, as the original did
    if not sent_json:
        raise HttpError(415, "Send the body as application/json.")
    if not is_json:
        raise LegacyError(400, "INVALID_JSON", "Invalid JSON in request body")
    body = validate_body(data, routed)
    submitted = await service.submit_once(
        ctx=ctx,
        request=to_generation(body),
        key=key,
        idempotency_key=idempotency_key,
        # Only a request with an Idempotency-Key is compared by it (as the native and OpenAI surfaces do).
        fingerprint="" if idempotency_key is None else idempotency.request_hash("oig.generate", body.fingerprint()),
    )
    response = await respond(ctx, submitted.job, key, request.scope.get("root_path", ""))
    if submitted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _is_json(content_type: str) -> bool:
    mimetype = content_type.split(";", 1)[0].strip().lower()
    return mimetype in JSON_TYPES or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def to_generation(body: LegacyRequest) -> GenerationRequest:
    """The domain request: DALL-E 3 keeps its quality and style; other models get their nearest terms."""
    params: dict[str, object] = {}
    if body.model == "dall-e-3":
        quality = body.quality
        if body.style is not None:
            params["style"] = body.style
    elif body.model == "dall-e-2":
        quality = "auto"  # DALL-E 2 has no quality choice; the original did not send it
    else:
        quality = "high" if body.quality == "hd" else "auto"
    return GenerationRequest(
        prompt=body.prompt,
        model=body.model,
        size=body.size,
        quality=quality,
        count=body.count,
        output_format="png",
        params=params,
        surface=SURFACE,
    )


async def respond(ctx: JobContext, job: Job, key: ApiKey, root_path: str) -> JSONResponse:
    """Wait for the job like the original held its request; 202 with the job when the wait runs out."""
    if ctx.settings.wait_timeout_seconds > 0:
        job = await service.wait_until_finished(
            ctx=ctx, job_id=job.id, key=key, timeout=ctx.settings.wait_timeout_seconds, job=job
        )
    if not job.is_finished:
        return still_running(job)
    if job.status != JobStatus.SUCCEEDED:
        return legacy_error(job_error(job))
    return FastJSONResponse(render_completed(job, root_path))


def still_running(job: Job) -> JSONResponse:
    """The answer for a job that is not finished yet: nothing is lost, the job goes on and keeps its images."""
    message = (
        f"The images are still being generated as job {job.id}; they are kept. Send the same request again "
        "with the same Idempotency-Key header to receive them."
    )
    body = {"job_id": job.id, "status": "pending", "images": [], "message": message}
    return JSONResponse(body, status_code=202, headers={"Retry-After": POLL_RETRY_AFTER})


def render_completed(job: Job, root_path: str) -> dict[str, object]:
    """The original's success body; image URLs are relative, as it gave them."""
    revised = (job.result or {}).get("revised_prompt")
    return {
        "job_id": job.id,
        "status": "completed",
        "images": [
            {
                "id": image.public_id,
                "url": f"{root_path.rstrip('/')}/images/{image.public_id}",
                "prompt": revised or job.prompt,
                "model": job.model,
                "size": job.size,
            }
            for image in job.live_images
        ],
    }


@router.get("/images/{image_id}", response_model=None)
async def get_image(image_id: str, request: Request, key: ReadingKey) -> Response:
    """The image's bytes; only its exact id matches."""
    image = await _find_image(job_context(request), image_id, key)
    media_type = CONTENT_TYPES.get(image.format, "application/octet-stream")
    try:
        return await stored_response(request, image.storage_key, media_type=media_type, headers={})
    except FileNotFoundError:
        raise _not_found(image_id) from None


@router.delete("/images/{image_id}")
async def delete_image(image_id: str, request: Request, key: DeletingKey) -> dict[str, str]:
    """Delete one image: its file goes, the job and its other images stay, the history shows it deleted."""
    ctx = job_context(request)
    image = await _find_image(ctx, image_id, key)
    async with ctx.sessions() as session, session.begin():
        marked = await session.execute(
            update(JobImage).where(JobImage.id == image.id, JobImage.deleted_at.is_(None)).values(deleted_at=utcnow())
        )
    if not getattr(marked, "rowcount", 0):
        raise _not_found(image_id)  # deleted meanwhile by a concurrent request
    # The file goes after the commit: a crash in between leaves an orphan, which retention removes.
    await ctx.storage.delete(image.storage_key)
    return {"status": "success", "message": f"Image {image_id} deleted"}


async def _find_image(ctx: JobContext, image_id: str, key: ApiKey) -> JobImage:
    """The caller's live image with exactly this id; IMAGE_NOT_FOUND for anything else (other keys' too)."""
    async with ctx.sessions() as session:
        image = await queries.live_image(session, image_id, key_id=key.id)
    if image is None:
        raise _not_found(image_id)
    return image


def _not_found(image_id: str) -> LegacyError:
    return LegacyError(404, "IMAGE_NOT_FOUND", f"Image not found: {image_id}")
