"""The history as CSV: every job the history's filters select, streamed a page at a time."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.admin import queries
from imagegate.admin.web import Admin
from imagegate.db import utcnow
from imagegate.jobs.models import Job
from imagegate.services import AppServices

router = APIRouter(prefix="/admin", include_in_schema=False)
BATCH = 500
COLUMNS = (
    "created_at",
    "job_id",
    "key_handle",
    "key_name",
    "surface",
    "request_id",
    "model",
    "backend",
    "status",
    "deleted_at",
    "deleted_by",
    "images",
    "count",
    "size",
    "started_at",
    "finished_at",
    "seconds",
    "error_code",
    "prompt",
)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    """A CSV cell; text a spreadsheet would run as a formula is prefixed with a quote."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _row(job: Job, names: dict[str, str]) -> list[str]:
    seconds = (
        f"{(job.finished_at - job.started_at).total_seconds():.3f}" if job.started_at and job.finished_at else None
    )
    values = (
        job.created_at,
        job.id,
        job.key_handle,
        names.get(job.key_handle),
        job.surface,
        job.request_id,
        job.model,
        job.backend,
        job.status,
        job.deleted_at,
        job.deleted_by,
        job.image_count,
        job.count,
        job.size,
        job.started_at,
        job.finished_at,
        seconds,
        job.error_code,
        job.prompt,
    )
    return [_cell(value) for value in values]


async def history_csv(
    *, sessions: async_sessionmaker[AsyncSession], filters: queries.HistoryFilter
) -> AsyncIterator[str]:
    """The header, then every selected job newest first, one short transaction per batch."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    cursor: str | None = None
    while True:
        async with sessions() as session:
            batch = await queries.history(session, filters, cursor, limit=BATCH)
            names = await queries.key_names(session, (job.key_handle for job in batch.jobs))
        for job in batch.jobs:
            writer.writerow(_row(job, names))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if batch.next_cursor is None:
            return
        cursor = batch.next_cursor


@router.get("/history.csv")
async def export_history(
    admin: Admin,
    svc: AppServices,
    key: str = "",
    status: str = "",
    model: str = "",
    backend: str = "",
    since: str = "",
    until: str = "",
    q: Annotated[str, Query(max_length=500)] = "",
) -> StreamingResponse:
    """The filtered history as a CSV download."""
    filters = queries.HistoryFilter(key.strip(), status, model, backend, since, until, q.strip())
    async with svc.sessions() as session:
        await queries.history(session, filters, None, limit=1)  # a bad filter is a 400 page, not a broken download
    name = f"imagegate-history-{utcnow():%Y%m%d-%H%M%S}.csv"
    return StreamingResponse(
        history_csv(sessions=svc.sessions, filters=filters),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )
