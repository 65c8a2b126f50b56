"""A submission: its webhook's destination and input images checked, then its job row written in one statement."""

from __future__ import annotations

import asyncio
import functools
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Connection, Insert, ScalarSelect, Table, bindparam, func, insert, select, union_all
from sqlalchemy.orm import aliased

from imagegate.db import detached, utcnow
from imagegate.errors import PayloadTooLarge
from imagegate.images import ImageHeader, ImageInfo, inspect_image, read_header
from imagegate.jobs import notify
from imagegate.jobs.models import ACTIVE, Job, JobInput, JobKind, JobStatus
from imagegate.jobs.requests import GenerationRequest, Reference, ValidRequest
from imagegate.keys.models import ApiKey
from imagegate.logs import current_request_id
from imagegate.settings import Settings
from imagegate.webhooks import targets
from imagegate.webhooks.targets import WebhookTarget


async def webhook_target(request: GenerationRequest, settings: Settings) -> WebhookTarget | None:
    """The webhook the request asks for, its destination checked; None when it asks for none."""
    asked = targets.requested(request.webhook_url, request.webhook_events, fallback_base=settings.public_base_url)
    if asked is None:
        return None
    url, events, base = asked
    await targets.check_destination(url, allow_private=settings.webhook_allow_private)
    return WebhookTarget(url, events, base)


async def inspect_inputs(
    uploads: list[Reference], settings: Settings, decode_slots: asyncio.Semaphore
) -> list[ImageInfo]:
    """Every input's bytes and header against the limits first, then each decoded, a few at a time per process.

    A decoded image costs width * height * 4 bytes however small its file: nothing is decoded until every
    header is within the per-image and per-request pixel budgets.
    """
    headers = [await input_header(upload, settings) for upload in uploads]
    total = sum(header.pixels for header in headers)
    if total > settings.max_request_pixels:
        raise PayloadTooLarge(
            f"The input images have {total} pixels in all; the limit is {settings.max_request_pixels} per request. "
            "Send fewer or smaller images.",
            param=uploads[0].param,
        )
    infos = []
    for upload, header in zip(uploads, headers, strict=True):
        async with decode_slots:
            infos.append(
                await asyncio.to_thread(inspect_image, upload.data, param=upload.param, max_pixels=header.pixels)
            )
    return infos


async def input_header(upload: Reference, settings: Settings) -> ImageHeader:
    """The upload's header, its bytes and pixels within the per-image limits."""
    size = await asyncio.to_thread(lambda: upload.size)
    if size > settings.max_reference_bytes:
        raise PayloadTooLarge(
            f"{upload.param} is {size} bytes; the limit is {settings.max_reference_bytes} bytes per input image.",
            param=upload.param,
        )
    header = await asyncio.to_thread(read_header, upload.data, param=upload.param)
    if header.pixels > settings.max_input_pixels:
        raise PayloadTooLarge(
            f"{upload.param} is {header.width}x{header.height} pixels; the limit is {settings.max_input_pixels} "
            "pixels per input image.",
            param=upload.param,
        )
    return header


# The columns of a queued job that no request sets, written as they are (the Core insert skips the ORM's defaults).
NOT_YET: dict[str, Any] = {
    "result": None,
    "attempts": 0,
    "worker_id": None,
    "lease_until": None,
    "cancel_requested": False,
    "image_count": 0,
    "error_code": None,
    "error_message": None,
    "error_status": None,
    "error_retry_after": None,
    "logs": "",
    "started_at": None,
    "finished_at": None,
    "deleted_at": None,
    "deleted_by": None,
}


def new_job(
    job_id: str,
    key: ApiKey,
    route: tuple[str, str],
    valid: ValidRequest,
    request: GenerationRequest,
    inputs: list[tuple[str, str, ImageInfo]],
    settings: Settings,
    webhook: WebhookTarget | None,
) -> Job:
    """The queued job row, with a row per stored input: every column set, as it will be written.

    Built from plain mappings without the ORM's attribute events (db.detached): it is only written by a Core insert
    and read by the caller's answer and the waiter.
    """
    now = utcnow()
    model, backend = route
    row = {
        "id": job_id,
        "key_id": key.id,
        "key_handle": key.handle,
        "kind": JobKind.IMAGE,
        "status": JobStatus.QUEUED,
        "model": model,
        "backend": backend,
        "prompt": valid.prompt,
        "size": valid.size,
        "width": valid.width,
        "height": valid.height,
        "quality": valid.quality,
        "output_format": valid.output_format,
        "count": valid.count,
        "operation": request.resolved_operation,
        "params": dict(request.params),
        "request_id": current_request_id(),
        "surface": request.surface,
        "created_at": now,
        "expires_at": now + timedelta(days=settings.retention_days),
        **NOT_YET,
        "webhook": webhook.as_json() if webhook else None,
    }
    return detached(Job, row, inputs=[_input_row(i, *item) for i, item in enumerate(inputs)], images=[])


def _input_row(index: int, storage_key: str, role: str, info: ImageInfo) -> JobInput:
    return detached(
        JobInput,
        {
            "index": index,
            "role": role,
            "storage_key": storage_key,
            "width": info.width,
            "height": info.height,
            "format": info.format,
            "bytes": info.bytes,
            "sha256": info.sha256,
        },
    )


OTHER = aliased(Job)  # built once: an alias copies every column (see jobs/queue.py)
JOB, JOB_INPUT = cast(Table, Job.__table__), cast(Table, JobInput.__table__)
# Written by the insert's VALUES (everything else the row has is computed in the statement).
WRITTEN = tuple(column for column in JOB.columns if column.key not in ("seq", "fair_tag"))
INPUT_COLUMNS = tuple(column.key for column in JOB_INPUT.columns if column.key != "id")


def insert_queued(connection: Connection, job: Job) -> int:
    """Write the queued job and its input rows (Core, no unit of work); how many image jobs now wait in all.

    One statement computes its fair tag and counts the queue; job gets the seq and fair tag the database gave it.
    """
    values = {column.key: getattr(job, column.key) for column in WRITTEN}
    params = {**values, "tag_backend": job.backend, "tag_key_id": job.key_id, "new_id": job.id}
    dialect = connection.dialect.name
    if dialect == "postgresql":
        params["queued_notice"] = notify.queued_notice(backend=job.backend, job_id=job.id)
    row = connection.execute(_insert_statement(dialect), params).one()
    job.seq, job.fair_tag = row.seq, row.fair_tag
    if job.inputs:
        rows = [{name: getattr(item, name) for name in INPUT_COLUMNS} | {"job_id": job.id} for item in job.inputs]
        connection.execute(insert(JOB_INPUT), rows)
    return int(row.others) + 1


@functools.cache
def _insert_statement(dialect: str) -> Insert:
    """The queued job's INSERT, built once per dialect: its values, the tags' key and backend, the id are bound.

    On PostgreSQL it also sends the NOTIFY that wakes other processes' workers (on commit, never for a rollback).
    """
    # Counted without the new row: SQLite's RETURNING sees it, PostgreSQL's sees the table as it was.
    others = (
        select(func.count())
        .select_from(OTHER)
        .where(OTHER.status == JobStatus.QUEUED, OTHER.kind == JobKind.IMAGE, OTHER.id != bindparam("new_id"))
        .scalar_subquery()
    )
    values = {column.key: bindparam(column.key, type_=column.type) for column in WRITTEN}
    return (
        insert(JOB)
        .values(**values, fair_tag=_fair_tag())
        .returning(JOB.c.seq, JOB.c.fair_tag, others.label("others"), *notify.queued_returning(dialect))
    )


def _fair_tag() -> ScalarSelect[Any]:
    """Start-time fair queuing: the scheduler runs the smallest tag first.

    The queue's virtual time is the smallest tag still queued or running; a key's next job starts at one past its
    own latest queued or running job, and never before the virtual time. A key with a long backlog therefore
    alternates with newcomers instead of making them wait behind all of it.
    """
    active = OTHER.status.in_(ACTIVE) & (OTHER.kind == JobKind.IMAGE) & (OTHER.backend == bindparam("tag_backend"))
    candidates = union_all(
        select(func.min(OTHER.fair_tag).label("tag")).where(active),
        select((func.max(OTHER.fair_tag) + 1).label("tag")).where(active, OTHER.key_id == bindparam("tag_key_id")),
    ).subquery()
    return select(func.coalesce(func.max(candidates.c.tag), 0)).scalar_subquery()
