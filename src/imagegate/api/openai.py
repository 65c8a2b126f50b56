"""The OpenAI-compatible surface: /v1/images/generations, /edits, /variations and /v1/models.

A translator only: requests become GenerationRequests and jobs like any other; finished jobs are rendered in
OpenAI's shapes, so the official SDKs work against ImageGate by changing base_url and api_key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile

from imagegate.api.common import FastJSONResponse, base_url, job_context
from imagegate.api.errors import errors_to_invalid
from imagegate.api.openai_shapes import (
    PASSTHROUGH,
    EditFields,
    EditJsonBody,
    GenerationsBody,
    ImageOptions,
    VariationFields,
    default_response_format,
    described,
    encode_b64,
    image_b64,
    image_data,
    openai_error,
    sse,
    stream_event,
)
from imagegate.backends.base import Operation
from imagegate.errors import ImagegateError, InvalidRequest, NotFound, PayloadTooLarge
from imagegate.images import decode_base64, sha256_of
from imagegate.jobs import idempotency, service
from imagegate.jobs.failures import job_error
from imagegate.jobs.models import Job, JobStatus
from imagegate.jobs.requests import GenerationRequest, Reference
from imagegate.jobs.service import JobContext
from imagegate.keys import limits
from imagegate.keys.auth import CallerKey
from imagegate.keys.models import ApiKey

router = APIRouter(prefix="/v1", tags=["openai"])


async def close_uploads(request: Request) -> AsyncIterator[None]:
    """Close the files a multipart request spooled, whatever the answer: Starlette leaves that to whoever read them."""
    try:
        yield
    finally:
        await request.close()


M = TypeVar("M", bound=BaseModel)
PREFIXES = ("/v1/images/generations", "/v1/images/edits", "/v1/images/variations", "/v1/models")
VARIATION_PROMPT = "Variations of the provided image."
MAX_FORM_FIELDS = 100
NO_RETRY = {"x-should-retry": "false"}


class StillRunning(ImagegateError):
    """The image is still being generated."""

    status = 504
    code = "timeout"


@router.post("/images/generations")
async def generations(
    body: GenerationsBody, request: Request, key: CallerKey, idempotency_key: Annotated[str | None, Header()] = None
) -> Response:
    """Create images from a prompt."""
    generation = _generation(body, prompt=body.prompt, references=(), mask=None)
    return await _run(request, key, generation, body, "generations", idempotency_key)


@router.post("/images/edits", dependencies=[Depends(close_uploads)])
async def edits(request: Request, key: CallerKey, idempotency_key: Annotated[str | None, Header()] = None) -> Response:
    """Edit images (multipart files or JSON data URLs), with an optional mask."""
    if request.headers.get("content-type", "").startswith("application/json"):
        body = _parse(EditJsonBody, await _json(request))
        references = tuple(
            [await _data_url(item.image_url, item.file_id, f"images[{i}]") for i, item in enumerate(body.images)]
        )
        mask = await _data_url(body.mask.image_url, body.mask.file_id, "mask") if body.mask else None
        fields: BaseModel = body
        edit = EditFields.model_validate(body.model_dump(exclude={"images", "mask"}, exclude_unset=True))
    else:
        form = await _form(request)
        references = tuple(await _files(form, ("image", "image[]"), request))
        mask_files = await _files(form, ("mask",), request)
        mask = mask_files[0] if mask_files else None
        edit = _parse(EditFields, _scalars(form, exclude=("image", "image[]", "mask")))
        fields = edit
    if not references:
        raise InvalidRequest("Send at least one image to edit ('image' or 'image[]').", param="image")
    generation = _generation(edit, prompt=edit.prompt, references=references, mask=mask)
    return await _run(request, key, generation, fields, "edits", idempotency_key)


@router.post("/images/variations", dependencies=[Depends(close_uploads)])
async def variations(
    request: Request, key: CallerKey, idempotency_key: Annotated[str | None, Header()] = None
) -> Response:
    """Variations of one image."""
    form = await _form(request)
    images = await _files(form, ("image",), request)
    if len(images) != 1:
        raise InvalidRequest("Send exactly one 'image' file.", param="image")
    fields = _parse(VariationFields, _scalars(form, exclude=("image",)))
    generation = _generation(
        fields, prompt=VARIATION_PROMPT, references=tuple(images), mask=None, operation=Operation.VARIATION
    )
    return await _run(request, key, generation, fields, "variations", idempotency_key)


@router.get("/models")
async def models(request: Request, key: CallerKey) -> dict[str, Any]:
    """The models this key may use, in OpenAI's list format."""
    return {"object": "list", "data": [_model(name, backend) for name, backend in _visible_models(request, key)]}


@router.get("/models/{model_id}")
async def model(model_id: str, request: Request, key: CallerKey) -> dict[str, Any]:
    """One model, or 404."""
    for name, backend in _visible_models(request, key):
        if name == model_id:
            return _model(name, backend)
    raise NotFound(f"The model '{model_id}' does not exist or you do not have access to it.", param="model")


def _visible_models(request: Request, key: ApiKey) -> list[tuple[str, str]]:
    return limits.visible_models(key, job_context(request).backends.models)


def _model(name: str, backend: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": f"imagegate:{backend}"}


def _generation(
    fields: ImageOptions,
    *,
    prompt: str,
    references: tuple[Reference, ...],
    mask: Reference | None,
    operation: Operation | None = None,
) -> GenerationRequest:
    values = fields.model_dump(exclude_unset=True)
    params = {name: values[name] for name in PASSTHROUGH if values.get(name) is not None}
    return GenerationRequest(
        prompt=prompt,
        model=fields.model,
        size=fields.size or "auto",
        quality=values.get("quality") or "auto",
        count=fields.n,
        output_format=values.get("output_format") or "png",
        references=references,
        mask=mask,
        params=params,
        surface="openai",
        operation=operation,
    )


async def _run(
    request: Request,
    key: ApiKey,
    generation: GenerationRequest,
    fields: BaseModel,
    operation: str,
    idempotency_key: str | None,
) -> Response:
    ctx = job_context(request)
    submitted = await service.submit_once(
        ctx=ctx,
        request=generation,
        key=key,
        idempotency_key=idempotency_key,
        # Only a request with an Idempotency-Key is compared by it: no canonical JSON of every body otherwise.
        fingerprint="" if idempotency_key is None else await _fingerprint(operation, fields, generation),
    )
    headers = {**NO_RETRY, **({"Idempotent-Replayed": "true"} if submitted.replayed else {})}
    job = submitted.job
    values = fields.model_dump(exclude_unset=True)
    if values.get("stream"):
        kind = "image_edit" if operation == "edits" else "image_generation"
        return _stream(ctx, key, job, kind, headers)
    job = await service.wait_until_finished(
        ctx=ctx, job_id=job.id, key=key, timeout=ctx.settings.openai_wait_timeout_seconds, job=job
    )
    if job.status != JobStatus.SUCCEEDED:
        return _job_error(job, headers)
    response_format = values.get("response_format") or default_response_format(job.model)
    body = {
        "created": int((job.finished_at or job.created_at).timestamp()),
        "data": await image_data(
            job, response_format=response_format, base=base_url(request), storage=ctx.storage, recent=ctx.outputs
        ),
        **described(job),
        "job_id": job.id,
    }
    return FastJSONResponse(body, headers=headers)


async def _fingerprint(operation: str, fields: BaseModel, generation: GenerationRequest) -> str:
    """The request's identity for Idempotency-Key: its fields and, for uploads, the files' digests."""
    body: dict[str, Any] = fields.model_dump(exclude_unset=True)
    uploads = [*generation.references, *([generation.mask] if generation.mask else [])]
    body["files"] = [await asyncio.to_thread(sha256_of, upload.data) for upload in uploads]
    return idempotency.request_hash(f"openai.{operation}", body)


def _job_error(job: Job, headers: dict[str, str]) -> JSONResponse:
    if not job.is_finished:
        error: ImagegateError = StillRunning(
            f"The image is still being generated; it goes on as job {job.id} (GET /v1/images/jobs/{job.id})."
        )
    else:
        error = job_error(job)
    # The job id lets a client fetch the result instead of paying for a retry.
    response = openai_error(error, {"job_id": job.id})
    response.headers.update(headers)
    return response


def _stream(ctx: JobContext, key: ApiKey, job: Job, kind: str, headers: dict[str, str]) -> StreamingResponse:
    # Subscribe before returning: the job may start (and send partial images) while the response begins.
    stack = ExitStack()
    partials = stack.enter_context(ctx.events.subscribe_partials(job.id))
    changed = stack.enter_context(ctx.events.subscribe(job.id))

    async def events() -> AsyncIterator[bytes]:
        with stack:
            deadline = asyncio.get_running_loop().time() + ctx.settings.openai_wait_timeout_seconds
            current = job
            while True:
                changed.clear()
                while not partials.empty():
                    index, data = partials.get_nowait()
                    event = stream_event(
                        current,
                        f"{kind}.partial_image",
                        b64=await encode_b64(data),
                        index=index,
                        created_at=int(time.time()),
                    )
                    yield sse(f"{kind}.partial_image", event)
                remaining = deadline - asyncio.get_running_loop().time()
                if service.stop_waiting(ctx, current) or remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(changed.wait(), min(remaining, ctx.settings.poll_interval_seconds))
                except TimeoutError:  # no news: the database says whether another process took it over
                    current = await service.get_job(ctx=ctx, job_id=job.id, key=key)
                else:
                    current = await service.current_job(ctx=ctx, job_id=job.id, key=key)
            async for chunk in _final_events(ctx, current, kind):
                yield chunk

    return StreamingResponse(events(), media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"})


async def _final_events(ctx: JobContext, job: Job, kind: str) -> AsyncIterator[bytes]:
    if job.status != JobStatus.SUCCEEDED:
        body = _job_error(job, {}).body
        yield f"event: error\ndata: {bytes(body).decode()}\n\n".encode()
        return
    created = int((job.finished_at or job.created_at).timestamp())
    for image in job.live_images:
        b64 = await image_b64(image, storage=ctx.storage, recent=ctx.outputs)
        yield sse(f"{kind}.completed", stream_event(job, f"{kind}.completed", b64=b64, index=None, created_at=created))


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise InvalidRequest("The body is not valid JSON.") from None


async def _form(request: Request) -> FormData:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise InvalidRequest("Send multipart/form-data with the image file(s).")
    settings = job_context(request).settings
    # Starlette answers a malformed form with a 400 HTTPException, rendered in this surface's shape.
    return await request.form(
        max_files=settings.max_reference_images + 1, max_fields=MAX_FORM_FIELDS, max_part_size=1024 * 1024
    )


async def _files(form: FormData, names: tuple[str, ...], request: Request) -> list[Reference]:
    limit = job_context(request).settings.max_reference_bytes
    found = []
    for name in names:
        for position, value in enumerate(form.getlist(name)):
            param = f"{name}[{position}]" if name.endswith("[]") or len(form.getlist(name)) > 1 else name
            param = param.replace("[][", "[")
            if not isinstance(value, UploadFile):
                raise InvalidRequest(f"{param} must be a file upload.", param=param)
            # The upload stays in its spooled file (on disk past 1 MB); storage copies it a chunk at a time.
            reference = Reference(value.file, param)
            size = await asyncio.to_thread(_size_of, reference)
            if size > limit:
                raise PayloadTooLarge(f"{param} is {size} bytes; the limit is {limit} bytes.", param=param)
            found.append(reference)
    return found


def _size_of(reference: Reference) -> int:
    return reference.size


def _scalars(form: FormData, exclude: tuple[str, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, value in form.multi_items():
        if name in exclude:
            continue
        if isinstance(value, UploadFile):
            raise InvalidRequest(f"{name} must be a text field, not a file.", param=name)
        values[name] = value
    return values


def _parse(model: type[M], values: Any) -> M:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise errors_to_invalid(list(exc.errors())) from None


async def _data_url(url: str | None, file_id: str | None, param: str) -> Reference:
    if file_id is not None or url is None:
        raise InvalidRequest("Give the image as image_url with a data: URL; file ids are not supported.", param=param)
    if not url.startswith("data:"):
        raise InvalidRequest("image_url must be a data: URL (base64); remote URLs are not fetched.", param=param)
    return Reference(await asyncio.to_thread(decode_base64, url, param=param), param)
