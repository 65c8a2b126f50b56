"""Named reads of the job tables (job, job_image, job_input); the queue's claims and finishes are in queue.py.

Every other module asks here, so each question has one indexed query and one name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import load_only, selectinload

from imagegate.jobs.models import ACTIVE, FINISHED, Job, JobImage, JobInput, JobKind, JobStatus

DELIVERED = (JobStatus.SUCCEEDED, JobStatus.EXPIRED)
EXPIRABLE = tuple(s for s in FINISHED if s != JobStatus.EXPIRED)


# Listings: newest first, one page at a time


@dataclass(frozen=True)
class Anchor:
    """Where a page ends: the (created_at, seq) of its last job; the next page starts strictly after it."""

    created_at: datetime
    seq: int


@dataclass(frozen=True)
class JobPage:
    """One page of jobs, newest first, and the cursor (the last job's id) of the next page, if there is one."""

    jobs: list[Job]
    next_cursor: str | None


async def anchor_of(session: AsyncSession, job_id: str, *, key_id: int | None = None) -> Anchor | None:
    """The anchor a cursor (a job id) names; None when there is no such job (of that key, when given)."""
    statement = select(Job.created_at, Job.seq).where(Job.id == job_id)
    if key_id is not None:
        statement = statement.where(Job.key_id == key_id)
    row = (await session.execute(statement)).first()
    return None if row is None else Anchor(row.created_at, row.seq)


async def newest_first(session: AsyncSession, statement: Select[Job], *, limit: int, after: Anchor | None) -> JobPage:
    """One page of the statement's jobs, keyset-paginated on (created_at, seq).

    seq breaks ties between jobs created in the same instant, so paging never skips or repeats one, and no
    page scans the pages before it.
    """
    statement = statement.order_by(Job.created_at.desc(), Job.seq.desc())
    if after is not None:
        statement = statement.where(
            or_(Job.created_at < after.created_at, and_(Job.created_at == after.created_at, Job.seq < after.seq))
        )
    jobs = list((await session.scalars(statement.limit(limit + 1))).all())
    more = len(jobs) > limit
    jobs = jobs[:limit]
    return JobPage(jobs, jobs[-1].id if more else None)


def key_jobs(key_id: int) -> Select[Job]:
    """A key's image jobs it has not deleted, with their images and inputs (the native jobs list)."""
    return (
        select(Job)
        .where(Job.key_id == key_id, Job.deleted_at.is_(None), Job.kind == JobKind.IMAGE)
        .options(selectinload(Job.images), selectinload(Job.inputs))
    )


def every_job(conditions: Sequence[Any] = ()) -> Select[Job]:
    """Every job matching the conditions, with its images (the admin history)."""
    return select(Job).options(selectinload(Job.images)).where(*conditions)


# One job, one image


async def visible_job(session: AsyncSession, job_id: str, *, key_id: int | None) -> Job | None:
    """The image job with its images and inputs unless deleted; only the key's own when key_id is given."""
    statement = (
        select(Job)
        .where(Job.id == job_id, Job.deleted_at.is_(None), Job.kind == JobKind.IMAGE)
        .options(selectinload(Job.images), selectinload(Job.inputs))
    )
    if key_id is not None:
        statement = statement.where(Job.key_id == key_id)
    return await session.scalar(statement)


async def any_job(session: AsyncSession, job_id: str) -> Job | None:
    """The job with its images and inputs, whatever its kind or state (the admin sees everything)."""
    return await session.scalar(
        select(Job).where(Job.id == job_id).options(selectinload(Job.images), selectinload(Job.inputs))
    )


def job_now(job_id: str) -> Select[Job]:
    """The job with its images and inputs as a transaction sees it now (objects its session holds refreshed)."""
    return (
        select(Job)
        .where(Job.id == job_id)
        .options(selectinload(Job.images), selectinload(Job.inputs))
        .execution_options(populate_existing=True)
    )


async def job_as_it_is_now(session: AsyncSession, job_id: str) -> Job | None:
    """The job with its images and inputs as this transaction sees it now (objects the session holds refreshed)."""
    return await session.scalar(job_now(job_id))


async def newest_failure(session: AsyncSession, backend: str) -> Job | None:
    """The backend's newest failed job, with only its id, finish time and error loaded."""
    return await session.scalar(
        select(Job)
        .options(load_only(Job.id, Job.finished_at, Job.error_code, Job.error_message))
        .where(Job.status == JobStatus.FAILED, Job.backend == backend)
        .order_by(Job.seq.desc())
        .limit(1)
    )


async def job_exists(session: AsyncSession, job_id: str) -> bool:
    """Whether a job row with this id exists, in any state."""
    return await session.scalar(select(Job.seq).where(Job.id == job_id)) is not None


async def live_image(session: AsyncSession, public_id: str, *, key_id: int) -> JobImage | None:
    """The key's image with exactly this public id, unless it or its job was deleted."""
    return await session.scalar(
        select(JobImage)
        .join(Job, Job.id == JobImage.job_id)
        .where(
            JobImage.public_id == public_id,
            JobImage.deleted_at.is_(None),
            Job.key_id == key_id,
            Job.deleted_at.is_(None),
        )
    )


# Counts: the queue, a key's limits, the overview and metrics


async def active_by_backend(session: AsyncSession) -> dict[str, dict[JobStatus, int]]:
    """Queued and running jobs of every kind, per backend and status (backends with none are absent)."""
    rows = await session.execute(
        select(Job.backend, Job.status, func.count()).where(Job.status.in_(ACTIVE)).group_by(Job.backend, Job.status)
    )
    counts: dict[str, dict[JobStatus, int]] = {}
    for backend, status, count in rows.all():
        counts.setdefault(backend, {})[JobStatus(status)] = int(count)
    return counts


async def stored_bytes(session: AsyncSession) -> int:
    """Bytes of every output and input image still stored."""
    images = await session.scalar(select(func.coalesce(func.sum(JobImage.bytes), 0)))
    inputs = await session.scalar(select(func.coalesce(func.sum(JobInput.bytes), 0)))
    return int(images or 0) + int(inputs or 0)


async def queued_image_jobs(session: AsyncSession) -> int:
    """Image jobs waiting in the queue, on every backend."""
    count = await session.scalar(
        select(func.count()).select_from(Job).where(Job.status == JobStatus.QUEUED, Job.kind == JobKind.IMAGE)
    )
    return int(count or 0)


async def images_used(session: AsyncSession, key_id: int, since: datetime) -> int:
    """Images the key has reserved (unfinished jobs) or received (delivered jobs) since a moment."""
    return int(await session.scalar(images_used_query(key_id, since)) or 0)


def images_used_query(key_id: int, since: datetime) -> Select[int]:
    """The statement of images_used, also run on a connection by the submit's quota check."""
    reserved = case(
        (Job.status.in_(ACTIVE), Job.count),
        (Job.status.in_(DELIVERED), Job.image_count),
        else_=0,
    )
    return select(func.coalesce(func.sum(reserved), 0)).where(Job.key_id == key_id, Job.created_at >= since)


async def active_jobs(session: AsyncSession, key_id: int) -> int:
    """The key's queued and running jobs."""
    return int(await session.scalar(active_jobs_query(key_id)) or 0)


def active_jobs_query(key_id: int) -> Select[int]:
    """The statement of active_jobs, also run on a connection by the submit's quota check."""
    return select(func.count()).select_from(Job).where(Job.key_id == key_id, Job.status.in_(ACTIVE))


async def created_since_by_status(session: AsyncSession, since: datetime) -> dict[JobStatus, tuple[int, int]]:
    """Per status: the jobs created since a moment, and the images they delivered."""
    rows = await session.execute(
        select(Job.status, func.count(), func.coalesce(func.sum(Job.image_count), 0))
        .where(Job.created_at >= since)
        .group_by(Job.status)
    )
    return {JobStatus(status): (int(count), int(images)) for status, count, images in rows.all()}


async def images_made_since(session: AsyncSession, since: datetime) -> list[tuple[datetime, int]]:
    """(created_at, images) of every job with images created since a moment."""
    rows = await session.execute(
        select(Job.created_at, Job.image_count).where(Job.created_at >= since, Job.image_count > 0)
    )
    return [(created, int(images)) for created, images in rows.all()]


async def key_statuses_since(session: AsyncSession, key_id: int, since: datetime) -> list[tuple[datetime, str]]:
    """(created_at, status) of each of the key's jobs created since a moment."""
    rows = await session.execute(
        select(Job.created_at, Job.status).where(Job.key_id == key_id, Job.created_at >= since)
    )
    return [(created, status) for created, status in rows.all()]


async def recent_jobs(session: AsyncSession, limit: int) -> list[Job]:
    """The newest jobs of every key and kind."""
    newest = select(Job).options(selectinload(Job.images)).order_by(Job.created_at.desc()).limit(limit)
    return list((await session.scalars(newest)).all())


async def key_totals(session: AsyncSession) -> dict[int, tuple[int, int]]:
    """Per key: requests (jobs) and images delivered, over all its history."""
    rows = await session.execute(
        select(Job.key_id, func.count(), func.coalesce(func.sum(Job.image_count), 0))
        .where(Job.key_id.is_not(None))
        .group_by(Job.key_id)
    )
    return {key_id: (int(count), int(images)) for key_id, count, images in rows.all() if key_id is not None}


# Retention


async def expirable_job_ids(session: AsyncSession, now: datetime, limit: int) -> list[str]:
    """Up to limit finished, unexpired jobs whose files are due to expire."""
    ids: list[str] = []
    # One status at a time keeps each lookup on the (status, expires_at) range.
    for status in EXPIRABLE:
        ids += (
            await session.scalars(
                select(Job.id).where(Job.status == status, Job.expires_at <= now).limit(limit - len(ids))
            )
        ).all()
        if len(ids) >= limit:
            break
    return ids


async def storage_keys_of(session: AsyncSession, job_ids: Sequence[str]) -> list[str]:
    """The storage keys of the jobs' output and input images."""
    keys = list((await session.scalars(select(JobImage.storage_key).where(JobImage.job_id.in_(job_ids)))).all())
    keys += (await session.scalars(select(JobInput.storage_key).where(JobInput.job_id.in_(job_ids)))).all()
    return keys


async def referenced_storage_keys(session: AsyncSession, keys: Sequence[str]) -> set[str]:
    """Those of the storage keys that an output or input image row still references."""
    referenced = set((await session.scalars(select(JobImage.storage_key).where(JobImage.storage_key.in_(keys)))).all())
    referenced |= set((await session.scalars(select(JobInput.storage_key).where(JobInput.storage_key.in_(keys)))).all())
    return referenced
