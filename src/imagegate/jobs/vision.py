"""Vision requests (POST /v1/vision): run at once beside the image queue, recorded like jobs.

A vision request never waits in the queue behind image jobs, but it takes one of its backend's slots: its
job row (kind 'vision') waits as queued, which reserves the next free slot against the scheduler's claims,
and moves itself to running once fewer than the backend's concurrency run anywhere (the claim's count and
lock), so the backend's concurrency holds across processes. The row is the history, counts against the key's
concurrent-jobs limit, and carries the answer's text.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import traceback
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from imagegate.backends import usage
from imagegate.backends.base import Describer, InputImage, JobReporter, VisionRequest, describer
from imagegate.db import utcnow, write_to_the_end
from imagegate.errors import (
    BackendError,
    ImagegateError,
    InvalidRequest,
    PayloadTooLarge,
    Refusal,
    ServiceUnavailable,
)
from imagegate.images import ImageInfo, decode_base64, inspect_image
from imagegate.jobs import queue, quotas
from imagegate.jobs.models import Job, JobKind, JobStatus
from imagegate.jobs.requests import check_prompt
from imagegate.jobs.service import JobContext
from imagegate.keys import audit, limits
from imagegate.keys.models import ApiKey
from imagegate.logs import current_request_id

logger = logging.getLogger(__name__)

BUSY_RETRY_AFTER = "5"
IMAGES_PARAM = "images_base64"


def new_vision_id() -> str:
    """A random public id, 'vis_' + 24 hex characters."""
    return "vis_" + secrets.token_hex(12)


@dataclass(frozen=True)
class Described:
    """A vision request's answer."""

    id: str
    model: str
    text: str


async def describe(*, ctx: JobContext, key: ApiKey, prompt: str, images: list[str], model: str | None) -> Described:
    """Check the key and the inputs (base64 images), take a slot of the backend, ask it, and record the outcome."""
    try:
        route = ctx.backends.route(model)
        limits.require_model(key, model=route.model, backend=route.backend)
        limits.require_scope(key, "vision")
    except Refusal as refusal:
        await audit.record_refusal(sessions=ctx.sessions, handle=key.handle, refusal=refusal, model=model)
        raise
    operation = describer(ctx.backends.backends[route.backend])
    if operation is None:
        raise InvalidRequest(
            f"Model {route.model!r} cannot read images (its backend {route.backend!r} has no vision support); "
            "use a model whose backend has it.",
            param="model",
        )
    prompt = check_prompt(prompt, ctx.settings)
    inputs = await _checked_images(images, ctx)
    request = VisionRequest(new_vision_id(), route.model, prompt, tuple(image for image, _info in inputs))
    await _take_slot(ctx, key, route.backend, _new_row(ctx, key, request, route.backend, inputs))
    try:
        answer = await _run(ctx, operation, request, route.backend)
    finally:
        ctx.events.queued(route.backend)  # the slot is free: this process's claim loop need not wait for its poll
    return Described(request.request_id, route.model, answer)


async def _checked_images(images: list[str], ctx: JobContext) -> list[tuple[InputImage, ImageInfo]]:
    """Each base64 image decoded and checked; InvalidRequest naming the field for anything wrong."""
    most = ctx.settings.max_reference_images
    if not 1 <= len(images) <= most:
        raise InvalidRequest(f"Send 1 to {most} images in {IMAGES_PARAM} ({len(images)} given).", param=IMAGES_PARAM)
    checked = []
    for index, value in enumerate(images):
        param = f"{IMAGES_PARAM}[{index}]"
        data = await asyncio.to_thread(decode_base64, value, param=param)
        if len(data) > ctx.settings.max_reference_bytes:
            raise PayloadTooLarge(
                f"{param} is {len(data)} bytes; the limit is {ctx.settings.max_reference_bytes} bytes per image.",
                param=param,
            )
        info = await asyncio.to_thread(inspect_image, data, param=param)
        checked.append((InputImage(width=info.width, height=info.height, format=info.format, data=data), info))
    return checked


def _new_row(
    ctx: JobContext, key: ApiKey, request: VisionRequest, backend: str, inputs: list[tuple[InputImage, ImageInfo]]
) -> Job:
    now = utcnow()
    first = inputs[0][1]
    return Job(
        id=request.request_id,
        kind=JobKind.VISION,
        key_id=key.id,
        key_handle=key.handle,
        status=JobStatus.QUEUED,  # waiting for a slot; never claimed by the scheduler (kind 'vision')
        model=request.model,
        backend=backend,
        prompt=request.prompt,
        size="auto",
        width=first.width,
        height=first.height,
        quality="auto",
        output_format=first.format,
        count=0,  # reads images, makes none: nothing counts against image quotas
        operation="vision",
        params={
            "inputs": [
                {"width": i.width, "height": i.height, "format": i.format, "sha256": i.sha256} for _, i in inputs
            ],
        },
        attempts=1,
        worker_id=ctx.events.local_worker,
        request_id=current_request_id(),
        created_at=now,
        expires_at=now + timedelta(days=ctx.settings.retention_days),
        inputs=[],
        images=[],
    )


async def _take_slot(ctx: JobContext, key: ApiKey, backend: str, job: Job) -> None:
    """Reserve a slot of the backend ahead of its queued image jobs, and wait until a running one frees it.

    503 when none frees up within the wait timeout; the row then records that.
    """
    await _reserve(ctx, key, job)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(ctx.settings.wait_timeout_seconds, ctx.settings.poll_interval_seconds)
    try:
        limit = ctx.backends.concurrency[backend]
        while not await write_to_the_end(
            queue.promote_vision(ctx.sessions, job_id=job.id, backend=backend, limit=limit)
        ):
            if loop.time() >= deadline:
                raise ServiceUnavailable(
                    f"Every slot of backend {backend!r} stayed busy; retry in a few seconds.",
                    headers={"Retry-After": BUSY_RETRY_AFTER},
                )
            await asyncio.sleep(ctx.settings.poll_interval_seconds)
    except BaseException as exc:
        error = exc if isinstance(exc, ImagegateError) else _gone()
        await write_to_the_end(_finish(ctx, job.id, JobReporter(1024), error=error, waiting=True))
        ctx.events.queued(backend)  # the reservation is gone: queued image jobs may be claimed again
        raise


async def _reserve(ctx: JobContext, key: ApiKey, job: Job) -> None:
    """The row, waiting: it holds the next free slot of its backend against image claims."""
    try:
        async with ctx.sessions() as session, session.begin():
            session.add(job)
            await session.flush()
            await quotas.check(session=session, key=key, now=job.created_at)
    except Refusal as refusal:
        await audit.record_refusal(sessions=ctx.sessions, handle=key.handle, refusal=refusal, model=job.model)
        raise


def _gone() -> ImagegateError:
    error = ImagegateError("The caller went away before the answer came.")
    error.code, error.status = "cancelled", 499
    return error


async def _run(ctx: JobContext, operation: Describer, request: VisionRequest, backend: str) -> str:
    reporter = JobReporter(ctx.settings.job_log_max_bytes)
    try:
        answer = (await operation.describe(request, reporter)).strip()
        if not answer:
            raise BackendError("The model gave no answer about the image(s); retry, or rephrase the prompt.")
    except asyncio.CancelledError:
        await _shielded(_finish(ctx, request.request_id, reporter, error=_gone()))
        raise
    except ImagegateError as failure:
        await _shielded(_finish(ctx, request.request_id, reporter, error=failure))
        raise
    except Exception as exc:
        logger.exception("vision request %s failed unexpectedly", request.request_id)
        reporter.write("".join(traceback.format_exception(exc)))
        unexpected = BackendError("The backend failed unexpectedly; the operator can find details in the log.")
        await _shielded(_finish(ctx, request.request_id, reporter, error=unexpected))
        raise unexpected from None
    finally:
        await _shielded(
            usage.record(ctx.sessions, backend=backend, job_id=request.request_id, events=reporter.usage_events)
        )
    await _shielded(_finish(ctx, request.request_id, reporter, answer=answer))
    return answer


async def _finish(
    ctx: JobContext,
    job_id: str,
    reporter: JobReporter,
    *,
    answer: str | None = None,
    error: ImagegateError | None = None,
    waiting: bool = False,
) -> None:
    values: dict[str, object] = {"finished_at": utcnow(), "logs": reporter.text()}
    if error is None:
        values |= {"status": JobStatus.SUCCEEDED, "result": {"text": answer}}
    else:
        values |= {
            "status": JobStatus.FAILED,
            "error_code": error.code,
            "error_message": error.message,
            "error_status": error.status,
        }
    async with ctx.sessions() as session, session.begin():
        status = JobStatus.QUEUED if waiting else JobStatus.RUNNING
        await session.execute(update(Job).where(Job.id == job_id, Job.status == status).values(**values))


async def _shielded(work: Coroutine[Any, Any, None]) -> None:
    """Like write_to_the_end for the record's last writes: a failure is logged, the answer still goes out."""
    try:
        await write_to_the_end(work)
    except Exception:
        logger.exception("recording a vision request failed")
