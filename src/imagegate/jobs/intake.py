"""A submission: its webhook's destination and input images checked, then its job row written in one statement."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import ColumnElement, func, insert, null, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from imagegate.errors import PayloadTooLarge
from imagegate.images import ImageHeader, ImageInfo, inspect_image, read_header
from imagegate.jobs.models import ACTIVE, Job, JobInput, JobKind, JobStatus
from imagegate.jobs.requests import GenerationRequest, Reference
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


OTHER = aliased(Job)  # built once: an alias copies every column (see jobs/queue.py)


async def insert_queued(session: AsyncSession, job: Job) -> int:
    """Write the queued job and its input rows (Core, no unit of work); how many image jobs now wait in all.

    One statement computes its fair tag and counts the queue; job gets the seq and fair tag the database gave it.
    """
    columns = [column for column in Job.__table__.columns if column.key not in ("seq", "fair_tag")]
    values: dict[str, Any] = {column.key: _value(getattr(job, column.key)) for column in columns}
    # Counted without the new row: SQLite's RETURNING sees it, PostgreSQL's sees the table as it was.
    others = (
        select(func.count())
        .select_from(OTHER)
        .where(OTHER.status == JobStatus.QUEUED, OTHER.kind == JobKind.IMAGE, OTHER.id != job.id)
        .scalar_subquery()
    )
    statement = (
        insert(Job).values(**values, fair_tag=_fair_tag(job)).returning(Job.seq, Job.fair_tag, others.label("others"))
    )
    row = (await session.execute(statement)).one()
    job.seq, job.fair_tag = row.seq, row.fair_tag
    if job.inputs:
        input_columns = [column.key for column in JobInput.__table__.columns if column.key != "id"]
        rows = [{name: getattr(item, name) for name in input_columns} | {"job_id": job.id} for item in job.inputs]
        await session.execute(insert(JobInput), rows)
    return int(row.others) + 1


def _value(value: object) -> object:
    # None is SQL NULL in every column (a JSON column would otherwise store the JSON text 'null').
    return null() if value is None else value


def _fair_tag(job: Job) -> ColumnElement[int]:
    """Start-time fair queuing: the scheduler runs the smallest tag first.

    The queue's virtual time is the smallest tag still queued or running; a key's next job starts at one past its
    own latest queued or running job, and never before the virtual time. A key with a long backlog therefore
    alternates with newcomers instead of making them wait behind all of it.
    """
    active = OTHER.status.in_(ACTIVE) & (OTHER.kind == JobKind.IMAGE) & (OTHER.backend == job.backend)
    candidates = union_all(
        select(func.min(OTHER.fair_tag).label("tag")).where(active),
        select((func.max(OTHER.fair_tag) + 1).label("tag")).where(active, OTHER.key_id == job.key_id),
    ).subquery()
    return select(func.coalesce(func.max(candidates.c.tag), 0)).scalar_subquery()
