"""Job verbs for workers: claim, finish, settle interrupted jobs. Every write is fenced by the attempt and worker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, and_, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from imagegate import onehop
from imagegate.backends.base import Operation
from imagegate.db import detached, engine_of, utcnow
from imagegate.errors import ImagegateError, JobInterrupted
from imagegate.images import ImageInfo
from imagegate.jobs import notify, queries, statements
from imagegate.jobs.models import Job, JobImage, JobInput, JobKind, JobStatus, new_image_id
from imagegate.webhooks import service as webhooks

# A job is tried at most this many times when the process running it dies or shuts down.
MAX_ATTEMPTS = 2
RETRY_AFTER_CHARS = 64  # the column's width; an HTTP date takes 29
JOB_COLUMNS = tuple(statements.JOB.columns)


@dataclass(frozen=True)
class Claimed:
    """A job this worker now owns; attempt (and worker_id, when set) fence every later write."""

    job_id: str
    attempt: int
    model: str = ""
    queued_seconds: float = 0.0
    backend: str = ""
    webhook: bool = False  # whether the job has a webhook, so its sender need only be woken then
    # The worker that claimed it; None where another process settles someone else's row (leases._take).
    worker_id: str | None = None
    # The row as the claim left it, with its inputs: what the run builds the backend's request from.
    job: Job | None = field(default=None, compare=False, repr=False)
    # Whether a job of the backend waited after this one in fair order as it was claimed: the loop claims again at once.
    more_queued: bool = False


@dataclass(frozen=True)
class StoredImage:
    """An output image already written to storage."""

    name: str
    storage_key: str
    info: ImageInfo
    public_id: str = field(default_factory=new_image_id)


async def any_queued(sessions: async_sessionmaker[AsyncSession], *, backend: str) -> bool:
    """Whether a job waits for the backend: a read, so an idle claim loop never takes the write lock."""
    async with engine_of(sessions).connect() as connection:
        found = (await connection.execute(statements.any_queued(), {"b_backend": backend})).first()
    return found is not None


def _lock_claims(session: AsyncSession, backend: str) -> Any:
    """Serialises claimers of one backend (PostgreSQL) so running counts are exact across processes."""
    return session.execute(statements.LOCK_CLAIMS, {"b_lock_name": f"imagegate.claim.{backend}"})


async def claim(
    sessions: async_sessionmaker[AsyncSession],
    *,
    backend: str,
    limit: int,
    worker_id: str,
    lease_seconds: float,
    count: int = 1,
) -> list[Claimed]:
    """Take up to `count` of the backend's fairest queued jobs, as many as keep `limit` of its jobs running anywhere.

    One transaction on a connection: the prebuilt claim (and, on PostgreSQL, the claimers' lock before it). The jobs
    come in fair order, leased to this worker; the last says whether others still wait.
    """
    params = {"b_backend": backend, "b_limit": limit, "b_worker_id": worker_id, "b_count": count}

    def claim_now(connection: Connection) -> list[Claimed]:
        dialect = connection.dialect.name
        if dialect == "postgresql":
            connection.execute(statements.LOCK_CLAIMS, {"b_lock_name": f"imagegate.claim.{backend}"})
        rows = connection.execute(statements.claim(dialect), params | statements.clock_values(lease_seconds)).all()
        in_order = sorted(rows, key=lambda row: (row.fair_tag, row.seq))  # RETURNING's order is the database's
        return [_claimed(connection, row, worker_id) for row in in_order]

    return await onehop.transaction(engine_of(sessions), claim_now)


def _claimed(connection: Connection, row: Row[Any], worker_id: str) -> Claimed:
    """One claimed row as the run takes it, its webhook's 'running' event queued in the claim's transaction."""
    _enqueue_webhook(connection, row.id, JobStatus.RUNNING, row.webhook)
    waited = max((row.started_at - row.created_at).total_seconds(), 0.0)
    return Claimed(
        row.id,
        row.attempts,
        row.model,
        waited,
        webhook=row.webhook is not None,
        worker_id=worker_id,
        job=_claimed_job(connection, row),
        more_queued=bool(row._mapping[statements.MORE_QUEUED]),
    )


def _enqueue_webhook(connection: Connection, job_id: str, event: str, target: Any) -> None:
    """The job's webhook event, in the connection's transaction: a Session only for a job whose webhook wants it."""
    if not webhooks.wants(target, event):
        return
    with Session(bind=connection, expire_on_commit=False) as session:
        job = session.scalar(queries.job_now(job_id))
        if job is not None and webhooks.add_delivery(session, job, event):
            session.flush()


def _claimed_job(connection: Connection, row: Row[Any]) -> Job:
    """The claimed row as a Job the run uses as it is; an edit's or variation's input rows read in the claim."""
    values = {column.key: row._mapping[column.key] for column in JOB_COLUMNS}
    if row.operation == Operation.GENERATE:  # only edits and variations carry input images
        return detached(Job, values, inputs=(), images=())
    # Core rows, made into detached objects: nothing a session would flush.
    inputs = connection.execute(statements.claimed_inputs(), {"b_job_id": row.id})
    return detached(Job, values, inputs=[detached(JobInput, item._asdict()) for item in inputs], images=())


async def promote_vision(sessions: async_sessionmaker[AsyncSession], *, job_id: str, backend: str, limit: int) -> bool:
    """Move a waiting vision request to running if fewer than `limit` of the backend's rows run anywhere."""
    async with sessions() as session, session.begin():
        if session.get_bind().dialect.name == "postgresql":
            await _lock_claims(session, backend)
        running = statements.RUNNING
        running_now = (
            select(func.count())
            .select_from(running)
            .where(running.c.status == JobStatus.RUNNING, running.c.backend == backend)
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
    """Still this run's row: running, in this attempt, and (when known) on this worker, re-checked in the UPDATE."""
    owned = (Job.id == claimed.job_id) & (Job.status == JobStatus.RUNNING) & (Job.attempts == claimed.attempt)
    return owned if claimed.worker_id is None else owned & (Job.worker_id == claimed.worker_id)


async def finish_succeeded(
    sessions: async_sessionmaker[AsyncSession],
    claimed: Claimed,
    images: list[StoredImage],
    logs: str,
    metadata: dict[str, Any],
    cost_usd: float | None = None,
) -> datetime | None:
    """Record the images (and the job's estimated cost) and mark the job succeeded; when it finished, or None when
    the job is no longer ours.

    One transaction on a connection: the prebuilt fenced UPDATE, then the image rows.
    """
    finished_at = utcnow()
    by_worker = claimed.worker_id is not None
    params = {
        "b_job_id": claimed.job_id,
        "b_attempt": claimed.attempt,
        "b_worker_id": claimed.worker_id,
        "b_finished_at": finished_at,
        "b_image_count": len(images),
        "b_logs": logs,
        "b_result": metadata,
        "b_cost_usd": cost_usd,
    }

    def finish_now(connection: Connection) -> datetime | None:
        finish = statements.finish_succeeded(connection.dialect.name, by_worker=by_worker, with_result=bool(metadata))
        settled = connection.execute(finish, params).first()
        if settled is None:
            return None
        connection.execute(statements.IMAGE_INSERT, _image_rows(claimed.job_id, images, finished_at))
        _enqueue_webhook(connection, claimed.job_id, JobStatus.SUCCEEDED, settled.webhook)
        return finished_at

    return await onehop.transaction(engine_of(sessions), finish_now)


def _image_rows(job_id: str, images: list[StoredImage], at: datetime) -> list[dict[str, Any]]:
    """The job_image rows of the stored images, as a Core insert takes them."""
    return [
        {
            "job_id": job_id,
            "index": index,
            "name": image.name,
            "storage_key": image.storage_key,
            "width": image.info.width,
            "height": image.info.height,
            "format": image.info.format,
            "bytes": image.info.bytes,
            "sha256": image.info.sha256,
            "created_at": at,
            "public_id": image.public_id,
            "deleted_at": None,
        }
        for index, image in enumerate(images)
    ]


def succeeded_job(
    job: Job,
    images: list[StoredImage],
    logs: str,
    metadata: dict[str, Any],
    finished_at: datetime,
    cost_usd: float | None = None,
) -> Job:
    """The claimed job as finish_succeeded recorded it: what its waiters here answer with, without reading it."""
    values = {column.key: getattr(job, column.key) for column in Job.__table__.columns}
    values.update(status=JobStatus.SUCCEEDED, finished_at=finished_at, image_count=len(images), logs=logs)
    values["cost_usd"] = cost_usd
    if metadata:
        values["result"] = metadata
    rows = [detached(JobImage, row) for row in _image_rows(job.id, images, finished_at)]
    # The claimed job's own input objects, shared: a detached object's collection moves nothing (no backref event).
    return detached(Job, values, inputs=job.inputs, images=rows)


async def finish_failed(
    sessions: async_sessionmaker[AsyncSession], claimed: Claimed, error: ImagegateError, logs: str
) -> bool:
    """Mark the job failed with the error callers will see; False when the job is no longer ours."""
    return await _settle(
        sessions,
        claimed,
        status=JobStatus.FAILED,
        logs=logs,
        error_code=error.code,
        error_message=error.message,
        error_status=error.status,
        error_retry_after=error.headers.get("Retry-After", "")[:RETRY_AFTER_CHARS] or None,
    )


async def finish_cancelled(sessions: async_sessionmaker[AsyncSession], claimed: Claimed, logs: str) -> bool:
    """Mark a running job cancelled at the request of its caller or the operator, saying which."""
    by_operator = Job.cancel_requested_by == "operator"
    return await _settle(
        sessions,
        claimed,
        status=JobStatus.CANCELLED,
        logs=logs,
        error_code="cancelled",
        error_message=case(
            (by_operator, "Cancelled by the operator while it was running."),
            else_="Cancelled by the caller while it was running.",
        ),
        error_status=409,
    )


OnlyIf = Callable[[AsyncSession], ColumnElement[bool]]  # a further condition, re-checked inside the UPDATE


async def settle_interrupted(
    sessions: async_sessionmaker[AsyncSession],
    claimed: Claimed,
    logs: str | None,
    *,
    retry: bool,
    only_if: OnlyIf | None = None,
) -> JobStatus | None:
    """Put a job whose run was cut short back in the queue (once), or fail it as interrupted.

    None when the job was no longer in that run (or no longer met only_if), so nothing changed.
    """
    kept = {} if logs is None else {"logs": logs}
    if retry and claimed.attempt < MAX_ATTEMPTS:
        async with sessions() as session, session.begin():
            condition = _owned(claimed) if only_if is None else and_(_owned(claimed), only_if(session))
            result = await session.execute(
                update(Job)
                .where(condition)
                .values(status=JobStatus.QUEUED, worker_id=None, started_at=None, lease_until=None, **kept)
                .execution_options(synchronize_session=False)
            )
        return JobStatus.QUEUED if getattr(result, "rowcount", 0) else None
    error = JobInterrupted("The job was interrupted by a restart of the service; submit it again.")
    failed = await _settle(
        sessions,
        claimed,
        only_if=only_if,
        status=JobStatus.FAILED,
        error_code=error.code,
        error_message=error.message,
        error_status=error.status,
        **kept,
    )
    return JobStatus.FAILED if failed else None


async def _settle(
    sessions: async_sessionmaker[AsyncSession], claimed: Claimed, only_if: OnlyIf | None = None, **values: Any
) -> bool:
    async with sessions() as session, session.begin():
        condition = _owned(claimed) if only_if is None else and_(_owned(claimed), only_if(session))
        settled = (
            await session.execute(
                update(Job)
                .where(condition)
                .values(finished_at=utcnow(), **values)
                .returning(Job.webhook, *notify.finished_returning(session, claimed.job_id))
            )
        ).first()
        if settled is not None:
            await webhooks.enqueue(session, claimed.job_id, str(values["status"]), settled.webhook)
    return settled is not None


async def running_on(sessions: async_sessionmaker[AsyncSession], worker_id: str) -> list[Claimed]:
    """The image jobs the database says this worker is running (vision requests run beside the scheduler)."""
    async with sessions() as session:
        rows = await session.execute(
            select(Job.id, Job.attempts, Job.model, Job.backend).where(
                Job.status == JobStatus.RUNNING, Job.worker_id == worker_id, Job.kind == JobKind.IMAGE
            )
        )
        return [Claimed(row.id, row.attempts, row.model, backend=row.backend, worker_id=worker_id) for row in rows]
