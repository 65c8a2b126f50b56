"""Job verbs for callers: submit, read, list, wait, cancel, delete."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Connection, case, delete, func, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate import onehop
from imagegate.backends.registry import BackendSet
from imagegate.db import engine_of, utcnow
from imagegate.errors import Conflict, InvalidRequest, NotFound, QueueFull, Refusal
from imagegate.jobs import idempotency, intake, queries, quotas
from imagegate.jobs.build import request_shape
from imagegate.jobs.events import JobEvents
from imagegate.jobs.models import DeletedBy, Job, JobImage, JobInput, JobKind, JobStatus
from imagegate.jobs.outputs import RecentOutputs
from imagegate.jobs.queries import JobPage
from imagegate.jobs.requests import GenerationRequest, require_storable_text, validate
from imagegate.jobs.watch import JobWatch
from imagegate.keys import audit, limits
from imagegate.keys.models import ApiKey
from imagegate.metrics import Metrics
from imagegate.settings import Settings
from imagegate.storage import Storage
from imagegate.webhooks import service as webhooks

# One lock id for every submit on PostgreSQL: the queue-size check and the fairness tag need a
# consistent view; SQLite gets the same from its single writer.
SUBMIT_LOCK_ID = 0x1A6E5B17
SUBMIT_LOCK = text("SELECT pg_advisory_xact_lock(:id)")
QUEUE_FULL_RETRY_AFTER = "5"
# A waiter on a job this process runs still looks at the database this often, in case the run was taken over.
LOCAL_WAIT_SECONDS = 30.0
# A cancel answers once the job has stopped, or after this long with the job still stopping.
CANCEL_WAIT_SECONDS = 10.0
DECODE_SLOTS = 2


def new_job_id() -> str:
    """A random public job id, 'img_' + 24 hex characters."""
    return "img_" + secrets.token_hex(12)


@dataclass(frozen=True)
class JobContext:
    """What the job verbs need from the running app."""

    sessions: async_sessionmaker[AsyncSession]
    storage: Storage
    backends: BackendSet
    settings: Settings
    events: JobEvents
    metrics: Metrics | None = None
    # Input images decoded at once in this process: each may take max_input_pixels * 4 bytes while it is.
    decode_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(DECODE_SLOTS))
    outputs: RecentOutputs = field(default_factory=RecentOutputs)
    # Looks at the jobs of all waiters at once; without it (or while it is stopped) each waiter polls its own.
    watch: JobWatch | None = None


async def submit(
    *, ctx: JobContext, request: GenerationRequest, key: ApiKey, idempotency_key: str | None = None
) -> Job:
    """Check the key's limits, validate, store the reference images and queue the job.

    With an Idempotency-Key (already claimed by idempotency.begin) the job is tied to it in the same
    transaction; a request that is not accepted frees it again.
    """
    try:
        job = await _accept(ctx=ctx, request=request, key=key, idempotency_key=idempotency_key)
    except Exception as error:
        if idempotency_key is not None:
            await idempotency.abandon(sessions=ctx.sessions, key=key, idempotency_key=idempotency_key)
        if isinstance(error, Refusal):
            await audit.record_refusal(sessions=ctx.sessions, handle=key.handle, refusal=error, model=request.model)
        raise
    ctx.events.queued(job.backend, job.id)
    if webhooks.wants(job.webhook, JobStatus.QUEUED):
        ctx.events.webhook_queued()
    return job


@dataclass(frozen=True)
class Submitted:
    """The job a request named, and whether it was replayed from an earlier request's Idempotency-Key."""

    job: Job
    replayed: bool


async def submit_once(
    *,
    ctx: JobContext,
    request: GenerationRequest,
    key: ApiKey,
    idempotency_key: str | None,
    fingerprint: str,
) -> Submitted:
    """Submit, honouring an Idempotency-Key: every surface's submitting endpoint goes through here.

    fingerprint identifies the request (idempotency.request_hash of the surface and its body).
    """
    if idempotency_key is None:
        return Submitted(await submit(ctx=ctx, request=request, key=key), replayed=False)
    idempotency_key = idempotency.check_key(idempotency_key)
    replayed_id = await idempotency.begin(
        sessions=ctx.sessions,
        key=key,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        ttl=timedelta(hours=ctx.settings.idempotency_ttl_hours),
    )
    if replayed_id is not None:
        return Submitted(await get_job(ctx=ctx, job_id=replayed_id, key=key), replayed=True)
    job = await submit(ctx=ctx, request=request, key=key, idempotency_key=idempotency_key)
    return Submitted(job, replayed=False)


async def _accept(*, ctx: JobContext, request: GenerationRequest, key: ApiKey, idempotency_key: str | None) -> Job:
    require_storable_text(request)
    route = ctx.backends.route(request.model)
    limits.require_model(key, model=route.model, backend=route.backend)
    limits.require_scope(key, "edit" if request.references else "generate")
    valid = validate(request, ctx.settings)
    webhook = await intake.webhook_target(request, ctx.settings)
    uploads = [*request.references, *([request.mask] if request.mask else [])]
    roles = ["reference"] * len(request.references) + (["mask"] if request.mask else [])
    infos = await intake.inspect_inputs(uploads, ctx.settings, ctx.decode_slots)
    job_id = new_job_id()
    input_keys = [
        f"inputs/{job_id}/{i}-{role}.{info.format}" for i, (role, info) in enumerate(zip(roles, infos, strict=True))
    ]
    job = intake.new_job(
        job_id,
        key,
        (route.model, route.backend),
        valid,
        request,
        list(zip(input_keys, roles, infos, strict=True)),
        ctx.settings,
        webhook,
    )
    # The backend judges the job row as it will run it; the uploads are not read into memory for that.
    ctx.backends.backends[route.backend].check(request_shape(job))
    try:
        for storage_key, upload in zip(input_keys, uploads, strict=True):
            await ctx.storage.put(storage_key, upload.data)
        ctx.events.queuing_here(job.id)  # before the commit: its NOTIFY is not news to this process's loop
        await _insert_queued(ctx, job, key, idempotency_key)
    except BaseException:
        for storage_key in input_keys:
            await ctx.storage.delete(storage_key)
        raise
    return job


async def _insert_queued(ctx: JobContext, job: Job, key: ApiKey, idempotency_key: str | None) -> None:
    """The submit's transaction in one hand-off (onehop); a refusal raised in it rolls it back, to the caller."""
    queue_max_size = ctx.settings.queue_max_size

    def queue_now(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            connection.execute(SUBMIT_LOCK, {"id": SUBMIT_LOCK_ID})
        if intake.insert_queued(connection, job) > queue_max_size:
            raise QueueFull(
                f"The queue is full ({queue_max_size} jobs waiting); retry in a few seconds.",
                headers={"Retry-After": QUEUE_FULL_RETRY_AFTER},
            )
        quotas.check_now(connection, key=key, now=job.created_at)
        if idempotency_key is not None:
            idempotency.complete(connection, key=key, idempotency_key=idempotency_key, job_id=job.id)
        webhooks.add_delivery_now(connection, job, JobStatus.QUEUED)

    await onehop.transaction(engine_of(ctx.sessions), queue_now)


async def get_job(*, ctx: JobContext, job_id: str, key: ApiKey | None) -> Job:
    """The job with its images and inputs; NotFound for other keys' jobs (their existence is not revealed)."""
    async with ctx.sessions() as session:
        job = await queries.visible_job(session, job_id, key_id=None if key is None else key.id)
    if job is None:
        whose = "" if key is None else " for this key"  # the operator (key None) sees every key's jobs
        raise NotFound(f"No job {job_id!r}{whose}.", param="id")
    return job


async def list_jobs(*, ctx: JobContext, key: ApiKey, limit: int, cursor: str | None) -> JobPage:
    """The key's jobs newest first; the cursor is the last job id of the previous page."""
    async with ctx.sessions() as session:
        after = None
        if cursor:
            after = await queries.anchor_of(session, cursor, key_id=key.id)
            if after is None:
                raise InvalidRequest(
                    f"Unknown cursor {cursor!r}; use next_cursor from the previous page.", param="cursor"
                )
        return await queries.newest_first(session, queries.key_jobs(key.id), limit=limit, after=after)


def runs_here(ctx: JobContext, job: Job) -> bool:
    """Whether this process's scheduler is running the job now."""
    return job.status == JobStatus.RUNNING and job.worker_id is not None and job.worker_id == ctx.events.local_worker


def stop_waiting(ctx: JobContext, job: Job) -> bool:
    """Whether a waiter should answer now: the job finished, or the process shuts down before it will.

    At shutdown a job running here still gets the grace period (its end, or its interruption, wakes the waiter);
    any other job will not end in this process, so its waiter answers with the job as it stands.
    """
    return job.is_finished or (ctx.events.draining.is_set() and not runs_here(ctx, job))


async def wait_until_finished(
    *, ctx: JobContext, job_id: str, key: ApiKey | None, timeout: float, job: Job | None = None
) -> Job:
    """The job once finished, or as it is when the timeout runs out or the process begins to shut down.

    job is the job as the caller has just seen it (one it submitted), so it need not be read again first.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    watch = ctx.watch
    with ctx.events.subscribe(job_id) as changed, watch.follow(job_id) if watch else contextlib.nullcontext():
        while True:
            changed.clear()  # before reading: a change after the read still wakes us
            if job is None:
                job = await get_job(ctx=ctx, job_id=job_id, key=key)
            remaining = deadline - loop.time()
            if stop_waiting(ctx, job) or remaining <= 0:
                return job
            # A job this process runs announces its end; any other job's change is found by the watch, one look
            # for all waiters (thousands of waiters polling every interval kept the database busy for nothing).
            here = runs_here(ctx, job)
            if watch is not None:
                watch.saw(job_id, None if here else job.status)
            told = here or (watch is not None and watch.running)
            pause = min(remaining, LOCAL_WAIT_SECONDS if told else ctx.settings.poll_interval_seconds)
            try:
                await asyncio.wait_for(changed.wait(), pause)
            except TimeoutError:
                job = None
            else:
                job = _announced(ctx, job_id, key)


async def current_job(*, ctx: JobContext, job_id: str, key: ApiKey | None) -> Job:
    """The job as this process's scheduler last announced it, or as the database has it when it did not say."""
    return _announced(ctx, job_id, key) or await get_job(ctx=ctx, job_id=job_id, key=key)


def _announced(ctx: JobContext, job_id: str, key: ApiKey | None) -> Job | None:
    """The job as this process's scheduler announced it, if the announcement carried it and the caller may see it."""
    job = ctx.events.latest(job_id)
    if job is None or job.deleted_at is not None or job.kind != JobKind.IMAGE:
        return None
    return job if key is None or job.key_id == key.id else None


async def cancel(*, ctx: JobContext, job_id: str, key: ApiKey | None) -> Job:
    """Cancel a queued job at once, or ask the worker running it to stop; Conflict when it has finished.

    key None is the operator, who may cancel any key's job.
    """
    job = await get_job(ctx=ctx, job_id=job_id, key=key)
    async with ctx.sessions() as session, session.begin():
        dequeued = await session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
            .values(
                status=JobStatus.CANCELLED,
                finished_at=utcnow(),
                error_code="cancelled",
                error_message=f"Cancelled by the {'caller' if key else 'operator'} before it started.",
                error_status=409,
            )
        )
        # A worker may have claimed it in the meantime: then ask that worker to stop it.
        flagged = None
        if _rowcount(dequeued):
            await webhooks.enqueue(session, job_id, JobStatus.CANCELLED, job.webhook)
        if _rowcount(dequeued) and ctx.metrics is not None:
            ctx.metrics.jobs.labels(job.backend, job.model, JobStatus.CANCELLED.value).inc()
        if not _rowcount(dequeued):
            flagged = await session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
                .values(cancel_requested=True, cancel_requested_by="caller" if key else "operator")
            )
    if flagged is not None and not _rowcount(flagged):
        job = await get_job(ctx=ctx, job_id=job_id, key=key)
        raise Conflict(f"Job {job_id} has already finished ({job.status}); nothing to cancel.")
    if flagged is not None:
        ctx.events.cancel(job_id)
    elif webhooks.wants(job.webhook, JobStatus.CANCELLED):
        ctx.events.webhook_queued()
    ctx.events.notify(job_id)
    return await wait_until_finished(ctx=ctx, job_id=job_id, key=key, timeout=CANCEL_WAIT_SECONDS)


def _rowcount(result: object) -> int:
    count: int = getattr(result, "rowcount", 0)
    return count


async def delete_job(*, ctx: JobContext, job_id: str, key: ApiKey | None, by: DeletedBy) -> None:
    """Delete a job that is not running: its files go, its record stays hidden (history and quotas).

    key None is the operator, who may delete any key's job (also one whose key was deleted); `by` is recorded.
    """
    job = await get_job(ctx=ctx, job_id=job_id, key=key)
    if job.status == JobStatus.RUNNING:
        raise Conflict(f"Job {job_id} is running; cancel it first (POST /v1/images/jobs/{job_id}/cancel).")
    now = utcnow()
    async with ctx.sessions() as session, session.begin():
        result = await session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status != JobStatus.RUNNING, Job.deleted_at.is_(None))
            .values(
                deleted_at=now,
                deleted_by=by,
                status=case((Job.status == JobStatus.QUEUED, JobStatus.CANCELLED.value), else_=Job.status),
                finished_at=func.coalesce(Job.finished_at, now),
            )
        )
        if not _rowcount(result):
            raise Conflict(f"Job {job_id} started meanwhile; cancel it first.")
        if job.status == JobStatus.QUEUED:
            await webhooks.enqueue(session, job_id, JobStatus.CANCELLED, job.webhook)
        await session.execute(delete(JobImage).where(JobImage.job_id == job_id))
        await session.execute(delete(JobInput).where(JobInput.job_id == job_id))
    # Files go after the commit: a crash in between leaves orphans, which retention removes.
    for storage_key in [image.storage_key for image in job.images] + [i.storage_key for i in job.inputs]:
        await ctx.storage.delete(storage_key)
    if job.status == JobStatus.QUEUED and webhooks.wants(job.webhook, JobStatus.CANCELLED):
        ctx.events.webhook_queued()
    ctx.events.notify(job_id)
