"""Job verbs for workers: claim, finish, settle interrupted jobs. Every write is fenced by the attempt."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, delete, func, not_, or_, select, text, true, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from imagegate.backends.base import Operation
from imagegate.db import utcnow
from imagegate.errors import ImagegateError, JobInterrupted
from imagegate.images import ImageInfo
from imagegate.jobs.models import Job, JobImage, JobKind, JobStatus, Worker, new_image_id
from imagegate.webhooks import service as webhooks

# A job is tried at most this many times when the process running it dies or shuts down.
MAX_ATTEMPTS = 2
# A vision request of a process without a worker id (no scheduler) counts as abandoned only after this long.
UNOWNED_VISION_STALE = timedelta(hours=1)
RETRY_AFTER_CHARS = 64  # the column's width; an HTTP date takes 29
# Built once: an alias copies every column and foreign key, which per claim cost more than the claim itself.
QUEUED, RUNNING = aliased(Job), aliased(Job)


@dataclass(frozen=True)
class Claimed:
    """A job this worker now owns; attempt fences every later write."""

    job_id: str
    attempt: int
    model: str = ""
    queued_seconds: float = 0.0
    backend: str = ""
    webhook: bool = False  # whether the job has a webhook, so its sender need only be woken then
    # The row as the claim left it, with its inputs, when they are known without reading them (a job without any).
    job: Job | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class StoredImage:
    """An output image already written to storage."""

    name: str
    storage_key: str
    info: ImageInfo
    public_id: str = field(default_factory=new_image_id)


async def any_queued(session: AsyncSession, *, backend: str) -> bool:
    """Whether a job waits for the backend: a read, so an idle claim loop never takes the write lock."""
    found = await session.scalar(
        select(Job.seq)
        .where(Job.status == JobStatus.QUEUED, Job.backend == backend, Job.kind == JobKind.IMAGE)
        .limit(1)
    )
    return found is not None


def _lock_claims(session: AsyncSession, backend: str) -> Any:
    """Serialises claimers of one backend (PostgreSQL) so running counts are exact across processes."""
    return session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": f"imagegate.claim.{backend}"}
    )


async def claim(session: AsyncSession, *, backend: str, limit: int, worker_id: str) -> Claimed | None:
    """Take the fairest queued job of the backend if fewer than `limit` of its jobs run anywhere."""
    if session.get_bind().dialect.name == "postgresql":
        await _lock_claims(session, backend)
    queued, running = QUEUED, RUNNING
    next_job = (
        select(queued.seq)
        .where(queued.status == JobStatus.QUEUED, queued.backend == backend, queued.kind == JobKind.IMAGE)
        .order_by(queued.fair_tag, queued.seq)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    # A vision request waiting for a slot holds it: it goes before every queued image job.
    taken = (
        select(func.count())
        .select_from(running)
        .where(
            running.backend == backend,
            or_(
                running.status == JobStatus.RUNNING,
                and_(running.status == JobStatus.QUEUED, running.kind == JobKind.VISION),
            ),
        )
        .scalar_subquery()
    )
    statement = (
        update(Job)
        .where(Job.seq == next_job, taken < limit)
        .values(
            status=JobStatus.RUNNING,
            started_at=utcnow(),
            attempts=Job.attempts + 1,
            worker_id=worker_id,
            cancel_requested=False,
        )
        .returning(*Job.__table__.columns)
        .execution_options(synchronize_session=False)
    )
    row = (await session.execute(statement)).first()
    if row is None:
        return None
    await webhooks.enqueue(session, row.id, JobStatus.RUNNING, row.webhook)
    waited = max((row.started_at - row.created_at).total_seconds(), 0.0)
    return Claimed(row.id, row.attempts, row.model, waited, webhook=row.webhook is not None, job=_claimed_job(row))


def _claimed_job(row: Row[Any]) -> Job | None:
    """The claimed row as a Job the run can use as it is, unless it has inputs (those are read with it then)."""
    if row.operation != Operation.GENERATE:  # only edits and variations carry input images
        return None
    return Job(**row._asdict(), inputs=[], images=[])


async def promote_vision(sessions: async_sessionmaker[AsyncSession], *, job_id: str, backend: str, limit: int) -> bool:
    """Move a waiting vision request to running if fewer than `limit` of the backend's rows run anywhere."""
    async with sessions() as session, session.begin():
        if session.get_bind().dialect.name == "postgresql":
            await _lock_claims(session, backend)
        running = RUNNING
        running_now = (
            select(func.count())
            .select_from(running)
            .where(running.status == JobStatus.RUNNING, running.backend == backend)
            .scalar_subquery()
        )
        result = await session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED, running_now < limit)
            .values(status=JobStatus.RUNNING, started_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _owned(claimed: Claimed) -> Any:
    return (Job.id == claimed.job_id) & (Job.status == JobStatus.RUNNING) & (Job.attempts == claimed.attempt)


async def finish_succeeded(
    sessions: async_sessionmaker[AsyncSession],
    claimed: Claimed,
    images: list[StoredImage],
    logs: str,
    metadata: dict[str, Any],
) -> datetime | None:
    """Record the images and mark the job succeeded; when it finished, or None when the job is no longer ours."""
    finished_at = utcnow()
    values: dict[str, Any] = {"result": metadata} if metadata else {}
    async with sessions() as session, session.begin():
        settled = (
            await session.execute(
                update(Job)
                .where(_owned(claimed))
                .values(
                    status=JobStatus.SUCCEEDED, finished_at=finished_at, image_count=len(images), logs=logs, **values
                )
                .returning(Job.webhook)
                .execution_options(synchronize_session=False)
            )
        ).first()
        if settled is None:
            return None
        session.add_all(_image_rows(claimed.job_id, images, finished_at))
        await webhooks.enqueue(session, claimed.job_id, JobStatus.SUCCEEDED, settled.webhook)
    return finished_at


def _image_rows(job_id: str, images: list[StoredImage], at: datetime) -> list[JobImage]:
    return [
        JobImage(
            job_id=job_id,
            index=index,
            name=image.name,
            storage_key=image.storage_key,
            width=image.info.width,
            height=image.info.height,
            format=image.info.format,
            bytes=image.info.bytes,
            sha256=image.info.sha256,
            created_at=at,
            public_id=image.public_id,
            deleted_at=None,
        )
        for index, image in enumerate(images)
    ]


def succeeded_job(
    job: Job, images: list[StoredImage], logs: str, metadata: dict[str, Any], finished_at: datetime
) -> Job:
    """The claimed job as finish_succeeded recorded it: what its waiters here answer with, without reading it."""
    values = {column.key: getattr(job, column.key) for column in Job.__table__.columns}
    values.update(status=JobStatus.SUCCEEDED, finished_at=finished_at, image_count=len(images), logs=logs)
    if metadata:
        values["result"] = metadata
    return Job(**values, inputs=list(job.inputs), images=_image_rows(job.id, images, finished_at))


async def finish_failed(
    sessions: async_sessionmaker[AsyncSession], claimed: Claimed, error: ImagegateError, logs: str
) -> bool:
    """Mark the job failed with the error callers will see; False when the job is no longer ours."""
    async with sessions() as session, session.begin():
        job = await session.scalar(select(Job).where(_owned(claimed)))
        if job is None:
            return False
        job.status = JobStatus.FAILED
        job.finished_at = utcnow()
        job.logs = logs
        job.error_code, job.error_message, job.error_status = error.code, error.message, error.status
        job.error_retry_after = error.headers.get("Retry-After", "")[:RETRY_AFTER_CHARS] or None
        await webhooks.enqueue(session, job.id, JobStatus.FAILED, job.webhook)
    return True


async def finish_cancelled(sessions: async_sessionmaker[AsyncSession], claimed: Claimed, logs: str) -> bool:
    """Mark a running job cancelled at the caller's request."""
    return await _settle(
        sessions,
        claimed,
        status=JobStatus.CANCELLED,
        logs=logs,
        error_code="cancelled",
        error_message="Cancelled by the caller while it was running.",
        error_status=409,
    )


async def settle_interrupted(
    sessions: async_sessionmaker[AsyncSession], claimed: Claimed, logs: str | None, *, retry: bool
) -> JobStatus:
    """Put a job whose run was cut short back in the queue (once), or fail it as interrupted."""
    kept = {} if logs is None else {"logs": logs}
    if retry and claimed.attempt < MAX_ATTEMPTS:
        async with sessions() as session, session.begin():
            await session.execute(
                update(Job)
                .where(_owned(claimed))
                .values(status=JobStatus.QUEUED, worker_id=None, started_at=None, **kept)
            )
        return JobStatus.QUEUED
    error = JobInterrupted("The job was interrupted by a restart of the service; submit it again.")
    await _settle(
        sessions,
        claimed,
        status=JobStatus.FAILED,
        error_code=error.code,
        error_message=error.message,
        error_status=error.status,
        **kept,
    )
    return JobStatus.FAILED


async def _settle(sessions: async_sessionmaker[AsyncSession], claimed: Claimed, **values: Any) -> bool:
    async with sessions() as session, session.begin():
        settled = (
            await session.execute(
                update(Job).where(_owned(claimed)).values(finished_at=utcnow(), **values).returning(Job.webhook)
            )
        ).first()
        if settled is not None:
            await webhooks.enqueue(session, claimed.job_id, str(values["status"]), settled.webhook)
    return settled is not None


async def register_worker(sessions: async_sessionmaker[AsyncSession], worker_id: str) -> None:
    """Announce this process as a worker."""
    async with sessions() as session, session.begin():
        session.add(Worker(id=worker_id, hostname=host_identity(), pid=os.getpid()))


async def heartbeat(sessions: async_sessionmaker[AsyncSession], worker_id: str) -> None:
    """Tell other processes this worker is alive."""
    async with sessions() as session, session.begin():
        await session.execute(update(Worker).where(Worker.id == worker_id).values(heartbeat_at=utcnow()))


async def unregister_worker(sessions: async_sessionmaker[AsyncSession], worker_id: str) -> None:
    """Remove this worker's row on a clean shutdown."""
    async with sessions() as session, session.begin():
        await session.execute(delete(Worker).where(Worker.id == worker_id))


def host_identity() -> str:
    """This host and PID namespace: only processes sharing both can judge each other's pids."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}#{namespace}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def dead_workers(sessions: async_sessionmaker[AsyncSession], *, me: str, stale_after: float) -> set[str]:
    """Workers that stopped: heartbeat too old, or on this host with their process gone."""
    host, pid = host_identity(), os.getpid()
    cutoff = utcnow() - timedelta(seconds=stale_after)
    async with sessions() as session:
        workers = (await session.scalars(select(Worker).where(Worker.id != me))).all()
    dead = set()
    for worker in workers:
        same_host = worker.hostname == host
        if worker.heartbeat_at < cutoff or (same_host and (worker.pid == pid or not _pid_alive(worker.pid))):
            dead.add(worker.id)
    return dead


async def recover_interrupted(
    sessions: async_sessionmaker[AsyncSession], *, me: str, stale_after: float, retry: bool
) -> list[str]:
    """Settle running jobs whose worker is gone: requeue them once or fail them; returns their ids."""
    dead = await dead_workers(sessions, me=me, stale_after=stale_after)
    unowned_vision = and_(
        Job.kind == JobKind.VISION, Job.worker_id.is_(None), Job.created_at > utcnow() - UNOWNED_VISION_STALE
    )
    async with sessions() as session:
        live = select(Worker.id).where(Worker.id.not_in(dead) if dead else true())
        rows = (
            await session.execute(
                select(Job.id, Job.attempts, Job.kind, Job.status).where(
                    or_(
                        Job.status == JobStatus.RUNNING,
                        and_(Job.status == JobStatus.QUEUED, Job.kind == JobKind.VISION),
                    ),
                    or_(Job.worker_id.is_(None), Job.worker_id.not_in(live)),
                    not_(unowned_vision),
                )
            )
        ).all()
    settled = []
    for row in rows:
        if row.kind == JobKind.VISION:
            # It was answered on its HTTP connection, which died with the process: never run it again.
            await _fail_vision(sessions, row.id, row.status)
        else:
            await settle_interrupted(sessions, Claimed(row.id, row.attempts), None, retry=retry)
        settled.append(row.id)
    if dead:
        async with sessions() as session, session.begin():
            await session.execute(delete(Worker).where(Worker.id.in_(dead)))
    return settled


async def _fail_vision(sessions: async_sessionmaker[AsyncSession], job_id: str, status: str) -> None:
    error = JobInterrupted("The vision request was interrupted by a restart of the service; send it again.")
    async with sessions() as session, session.begin():
        await session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == status)
            .values(
                status=JobStatus.FAILED,
                finished_at=utcnow(),
                error_code=error.code,
                error_message=error.message,
                error_status=error.status,
            )
        )


async def running_on(sessions: async_sessionmaker[AsyncSession], worker_id: str) -> list[Claimed]:
    """The image jobs the database says this worker is running (vision requests run beside the scheduler)."""
    async with sessions() as session:
        rows = await session.execute(
            select(Job.id, Job.attempts, Job.model, Job.backend).where(
                Job.status == JobStatus.RUNNING, Job.worker_id == worker_id, Job.kind == JobKind.IMAGE
            )
        )
        return [Claimed(row.id, row.attempts, row.model, backend=row.backend) for row in rows]


async def cancel_requested(sessions: async_sessionmaker[AsyncSession], job_ids: list[str]) -> list[str]:
    """Which of these running jobs a caller asked to cancel."""
    if not job_ids:
        return []
    async with sessions() as session:
        return list(
            (await session.scalars(select(Job.id).where(Job.id.in_(job_ids), Job.cancel_requested.is_(True)))).all()
        )
