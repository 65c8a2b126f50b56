"""What a backend receives, built from the job row: its shape for check() at submit, with bytes for generate()."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from imagegate.backends.base import BackendRequest, ImageShape, InputImage, Operation, RequestShape
from imagegate.jobs.models import Job, JobInput
from imagegate.storage import Storage

T = TypeVar("T")
MASK = "mask"


def request_shape(job: Job) -> RequestShape:
    """The job's request as its backend will get it, with the inputs' sizes and formats but not their bytes."""
    references, mask = _by_role(job, [_shape(item) for item in job.inputs])
    return RequestShape(**_fields(job), references=references, mask=mask)


async def backend_request(job: Job, storage: Storage) -> BackendRequest:
    """The same request for generate(): with the job's id and its inputs' bytes, read from storage."""
    references, mask = _by_role(job, [await _image(item, storage) for item in job.inputs])
    return BackendRequest(**_fields(job), job_id=job.id, references=references, mask=mask)


def _fields(job: Job) -> dict[str, Any]:
    return {
        "model": job.model,
        "prompt": job.prompt,
        "operation": Operation(job.operation),
        "width": job.width,
        "height": job.height,
        "quality": job.quality,
        "output_format": job.output_format,
        "count": job.count,
        "size": job.size,
        "params": job.params,
    }


def _by_role(job: Job, images: Sequence[T]) -> tuple[tuple[T, ...], T | None]:
    """The job's inputs as (references, mask), given one image per job input in their order."""
    pairs = list(zip(job.inputs, images, strict=True))
    mask = next((image for item, image in pairs if item.role == MASK), None)
    return tuple(image for item, image in pairs if item.role != MASK), mask


def _shape(item: JobInput) -> ImageShape:
    return ImageShape(width=item.width, height=item.height, format=item.format)


async def _image(item: JobInput, storage: Storage) -> InputImage:
    return InputImage(
        width=item.width, height=item.height, format=item.format, data=await storage.get(item.storage_key)
    )
