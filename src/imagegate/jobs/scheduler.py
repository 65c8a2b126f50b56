"""The worker pool: per-backend claim loops, job runs, heartbeats, cancellation and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from imagegate.backends import usage
from imagegate.backends.base import BackendRequest, JobReporter, OutputImage
from imagegate.db import is_unavailable
from imagegate.errors import BackendError, ImagegateError
from imagegate.images import inspect_image, new_output_name
from imagegate.jobs import queue
from imagegate.jobs.build import backend_request
from imagegate.jobs.models import Job, JobStatus
from imagegate.jobs.queue import Claimed, StoredImage
from imagegate.jobs.service import JobContext
from imagegate.webhooks.sender import WebhookSender

logger = logging.getLogger(__name__)
T = TypeVar("T")
Outcome = tuple[str, str | None]  # (final status, error code)

# A finished job's record is retried this often while the database is away (doubling up to the maximum).
RECORD_RETRY_FIRST_SECONDS = 0.25
RECORD_RETRY_MAX_SECONDS = 5.0


class Scheduler:
    """Runs queued jobs: fair across keys, bounded per backend, safe across several processes."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.worker_id = "wrk_" + secrets.token_hex(8)
        self._wake = {name: asyncio.Event() for name in ctx.backends.backends}
        self._slots = {name: asyncio.Semaphore(n) for name, n in ctx.backends.concurrency.items()}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._cancelling: set[str] = set()
        self._unrecorded: dict[str, str] = {}  # job id → backend: finished, waiting for the database to record it
        self._claims_in_flight = 0  # claimed in the database but maybe not yet in _running
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        self._stop = asyncio.Event()
        self._stopped: asyncio.Future[None] | None = None
        self.webhooks = WebhookSender(ctx.sessions, ctx.settings, self.worker_id)
        ctx.events.local_worker = self.worker_id
        ctx.events.on_queued(self.wake)
        ctx.events.on_cancel(self.cancel_local)
        ctx.events.on_webhook(self.webhooks.wake)

    async def start(self) -> None:
        """Register this worker, settle jobs of dead workers, and start claiming."""
        await queue.register_worker(self.ctx.sessions, self.worker_id)
        await self.recover()
        for backend in self.ctx.backends.backends:
            self._loops.append(asyncio.create_task(self._claim_loop(backend), name=f"claim:{backend}"))
        self._loops.append(asyncio.create_task(self._heartbeat_loop(), name="heartbeat"))
        self.webhooks.start()

    async def recover(self) -> list[str]:
        """Requeue or fail the running jobs of workers that died, and those this worker lost track of."""
        settled = await queue.recover_interrupted(
            self.ctx.sessions,
            me=self.worker_id,
            stale_after=self.ctx.settings.worker_stale_seconds,
            retry=self.ctx.settings.interrupted_jobs == "retry",
        )
        if settled:
            logger.warning("settled %d job(s) interrupted by a stopped worker", len(settled))
        lost = await self._settle_lost()
        settled += lost
        if settled:
            for backend in self._wake:
                self.wake(backend)
        return settled

    async def lost_jobs(self) -> list[Claimed]:
        """Jobs the database says this worker runs but it does not (a run that ended without its record)."""
        rows = await queue.running_on(self.ctx.sessions, self.worker_id)
        if self._claims_in_flight:  # a job claimed this instant may not be tracked yet: judge at the next sweep
            return []
        return [row for row in rows if row.job_id not in self._running]

    async def _settle_lost(self) -> list[str]:
        lost = await self.lost_jobs()
        retry = self.ctx.settings.interrupted_jobs == "retry"
        for claimed in lost:
            status = await queue.settle_interrupted(self.ctx.sessions, claimed, None, retry=retry)
            logger.warning("job %s was running here untracked; now %s", claimed.job_id, status)
        return [claimed.job_id for claimed in lost]

    async def wedged_backends(self) -> dict[str, str]:
        """Backends whose slots are held by jobs that cannot end: backend → why (empty when all is well)."""
        wedged = {backend: "results waiting for the database" for backend in self._unrecorded.values()}
        for claimed in await self.lost_jobs():
            wedged.setdefault(claimed.backend, "jobs running here untracked")
        return wedged

    def wake(self, backend: str) -> None:
        """A job was queued for the backend: look for work now rather than at the next poll."""
        event = self._wake.get(backend)
        if event is not None:
            event.set()

    def cancel_local(self, job_id: str) -> bool:
        """Stop the job if this process runs it; True when it did."""
        task = self._running.get(job_id)
        if task is None:
            return False
        self._cancelling.add(job_id)
        task.cancel()
        return True

    def begin_stop(self) -> None:
        """Start stopping now (the grace period counts from here); stop() then waits for it to end."""
        if self._stopped is None:
            self._stopped = asyncio.ensure_future(self._stop_now())

    async def stop(self) -> None:
        """Stop claiming, give running jobs the grace period, then settle the rest as interrupted."""
        self.begin_stop()
        assert self._stopped is not None
        await self._stopped

    async def _stop_now(self) -> None:
        # The loops end by themselves at their next wait: cancelling one inside a database transaction could
        # leave that connection (and, on SQLite, the write lock) held.
        self._stopping = True
        self._stop.set()
        await asyncio.gather(*self._loops, return_exceptions=True)
        running = list(self._running.values())
        if running:
            logger.info(
                "waiting up to %ss for %d running job(s)",
                self.ctx.settings.shutdown_grace_seconds,
                len(running),
            )
            _done, pending = await asyncio.wait(running, timeout=self.ctx.settings.shutdown_grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        # Webhook sends in flight finish; whatever else is due waits in the database for any worker.
        await self.webhooks.stop()
        try:
            await queue.unregister_worker(self.ctx.sessions, self.worker_id)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            # Its heartbeat goes stale instead; the next start's recovery settles what it left running.
            logger.warning("could not unregister worker %s: database unavailable", self.worker_id)

    async def _claim_loop(self, backend: str) -> None:
        wake, slots = self._wake[backend], self._slots[backend]
        limit = self.ctx.backends.concurrency[backend]
        while await self._slot(slots):
            wake.clear()
            self._claims_in_flight += 1
            try:
                claimed = await self._claim(backend, limit)
            except Exception as exc:
                self._claims_in_flight -= 1
                slots.release()
                if is_unavailable(exc):
                    logger.warning(
                        "claiming a %s job: database unavailable (%s); retrying", backend, type(exc).__name__
                    )
                else:
                    logger.exception("claiming a %s job failed; retrying", backend)
                await self._pause(wake)
                continue
            if claimed is None:
                self._claims_in_flight -= 1
                slots.release()
                await self._pause(wake)
                continue
            if self.ctx.metrics is not None:
                self.ctx.metrics.queue_wait.labels(backend).observe(claimed.queued_seconds)
            task = asyncio.create_task(self._run(backend, claimed), name=f"job:{claimed.job_id}")
            self._running[claimed.job_id] = task
            self._claims_in_flight -= 1
            task.add_done_callback(functools.partial(self._finished, claimed, slots))
            if claimed.webhook:
                self.webhooks.wake()  # its 'running' event may wait to be sent
            self.ctx.events.notify(claimed.job_id)  # its waiters learn it runs here and stop polling

    async def _claim(self, backend: str, limit: int) -> Claimed | None:
        async with self.ctx.sessions() as session:
            waiting = await queue.any_queued(session, backend=backend)
        if not waiting:
            return None
        async with self.ctx.sessions() as session, session.begin():
            return await queue.claim(session, backend=backend, limit=limit, worker_id=self.worker_id)

    async def _slot(self, slots: asyncio.Semaphore) -> bool:
        """Wait for a free slot; False once stopping (no slot is then held)."""
        if self._stopping:
            return False
        acquire = asyncio.ensure_future(slots.acquire())
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not acquire.done():
            acquire.cancel()
            return False
        if self._stopping:
            slots.release()
            return False
        return True

    def _finished(self, claimed: Claimed, slots: asyncio.Semaphore, _task: asyncio.Task[None]) -> None:
        self._running.pop(claimed.job_id, None)
        self._cancelling.discard(claimed.job_id)
        slots.release()
        self.ctx.events.notify(claimed.job_id)
        if claimed.webhook:
            self.webhooks.wake()  # its final event may wait to be sent

    async def _pause(self, wake: asyncio.Event) -> None:
        """Until work is announced, the poll interval passes, or the scheduler stops."""
        waits = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(self._stop.wait())]
        await asyncio.wait(waits, timeout=self.ctx.settings.poll_interval_seconds, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waits:
            waiter.cancel()

    async def _heartbeat_loop(self) -> None:
        interval = min(self.ctx.settings.worker_heartbeat_seconds, self.ctx.settings.poll_interval_seconds * 5)
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)
            if not self._stopping:
                await self._guard(self._beat)

    async def _beat(self) -> None:
        await queue.heartbeat(self.ctx.sessions, self.worker_id)
        for job_id in await queue.cancel_requested(self.ctx.sessions, list(self._running)):
            self.cancel_local(job_id)
        await self.recover()

    @staticmethod
    async def _guard(work: Callable[[], Awaitable[None]]) -> None:
        try:
            await work()
        except Exception:
            logger.exception("scheduler housekeeping failed; will retry")

    async def _run(self, backend_name: str, claimed: Claimed) -> None:
        reporter = JobReporter(
            self.ctx.settings.job_log_max_bytes,
            on_partial=functools.partial(self.ctx.events.partial, claimed.job_id),
        )
        started = time.perf_counter()
        outcome: Outcome | None = None  # set when this run settled the job
        try:
            outcome = await self._attempt(backend_name, claimed, reporter)
        finally:
            await self._guard(
                functools.partial(
                    usage.record,
                    self.ctx.sessions,
                    backend=backend_name,
                    job_id=claimed.job_id,
                    events=reporter.usage_events,
                )
            )
            self._observe(backend_name, claimed, outcome, time.perf_counter() - started)

    async def _attempt(self, backend_name: str, claimed: Claimed, reporter: JobReporter) -> Outcome | None:
        """Run the job and record how it ended; None when the job was no longer this run's to settle."""
        sessions = self.ctx.sessions
        try:
            request = await self._backend_request(claimed)
            result = await self.ctx.backends.backends[backend_name].generate(request, reporter)
            if not result.images:
                raise BackendError("The backend returned no image.")
            stored = await self._store_outputs(result.images)
        except asyncio.CancelledError:
            cancelled = await self._record(backend_name, claimed, lambda: self._settle_cancelled(claimed, reporter))
            return (JobStatus.CANCELLED, None) if cancelled else None
        except ImagegateError as error:
            failed = await self._record(
                backend_name, claimed, functools.partial(queue.finish_failed, sessions, claimed, error, reporter.text())
            )
            return (JobStatus.FAILED, error.code) if failed else None
        except _NotLoaded:  # it has not run, so it goes back in the queue
            logger.warning("job %s could not be loaded (database unavailable); requeueing it", claimed.job_id)
            await self._record(backend_name, claimed, lambda: self._requeue(claimed))
            return None
        except Exception as exc:
            logger.exception("job %s failed unexpectedly", claimed.job_id)
            reporter.write("".join(traceback.format_exception(exc)))
            unexpected = BackendError("The backend failed unexpectedly; see the job's logs.")
            failed = await self._record(
                backend_name,
                claimed,
                functools.partial(queue.finish_failed, sessions, claimed, unexpected, reporter.text()),
            )
            return (JobStatus.FAILED, "unexpected") if failed else None
        succeeded = await self._record(
            backend_name,
            claimed,
            lambda: queue.finish_succeeded(sessions, claimed, stored, reporter.text(), result.metadata),
        )
        if succeeded:
            return (JobStatus.SUCCEEDED, None)
        await self._discard(stored)
        return None

    async def _requeue(self, claimed: Claimed) -> bool:
        await queue.settle_interrupted(self.ctx.sessions, claimed, None, retry=True)
        return False

    async def _record(self, backend: str, claimed: Claimed, write: Callable[[], Coroutine[Any, Any, bool]]) -> bool:
        """Write a job's end, retrying while the database is unavailable: the result is kept, never re-run.

        The backend has already done (and charged for) the work; only shutdown cuts the retries short, and then
        the next start's recovery settles the job.
        """
        delay = RECORD_RETRY_FIRST_SECONDS
        try:
            while True:
                try:
                    return await _whole(write())
                except Exception as exc:
                    if not is_unavailable(exc):
                        raise
                    if claimed.job_id not in self._unrecorded:
                        logger.warning(
                            "recording job %s waits for the database (%s); the result is kept",
                            claimed.job_id,
                            type(exc).__name__,
                        )
                    self._unrecorded[claimed.job_id] = backend
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECORD_RETRY_MAX_SECONDS)
        except asyncio.CancelledError:
            if claimed.job_id in self._unrecorded:
                logger.warning("job %s was not recorded before shutdown; the next start settles it", claimed.job_id)
            raise
        finally:
            if self._unrecorded.pop(claimed.job_id, None) is not None:
                logger.info("job %s recorded after the database came back", claimed.job_id)

    def _observe(self, backend: str, claimed: Claimed, outcome: Outcome | None, seconds: float) -> None:
        metrics = self.ctx.metrics
        if metrics is None or outcome is None:
            return
        status, code = outcome
        metrics.jobs.labels(backend, claimed.model, str(status)).inc()
        metrics.duration.labels(backend).observe(seconds)
        if code is not None:
            metrics.backend_errors.labels(backend, code).inc()
        logger.info(
            "job finished",
            extra={"job": claimed.job_id, "backend": backend, "status": str(status), "seconds": round(seconds, 3)},
        )

    async def _settle_cancelled(self, claimed: Claimed, reporter: JobReporter) -> bool:
        """True when the caller's cancel ended the job; False when shutdown put it back (or failed it)."""
        if claimed.job_id in self._cancelling:
            return await queue.finish_cancelled(self.ctx.sessions, claimed, reporter.text())
        reporter.write("[interrupted by shutdown]\n")
        status = await queue.settle_interrupted(
            self.ctx.sessions, claimed, reporter.text(), retry=self.ctx.settings.interrupted_jobs == "retry"
        )
        logger.warning("job %s interrupted by shutdown: now %s", claimed.job_id, status)
        return False

    async def _backend_request(self, claimed: Claimed) -> BackendRequest:
        try:
            async with self.ctx.sessions() as session:
                statement = select(Job).where(Job.id == claimed.job_id).options(selectinload(Job.inputs))
                job = await session.scalar(statement)
        except Exception as exc:
            if is_unavailable(exc):
                raise _NotLoaded from exc
            raise
        if job is None:
            raise BackendError("The job disappeared before it ran.")
        return await backend_request(job, self.ctx.storage)

    async def _store_outputs(self, images: list[OutputImage]) -> list[StoredImage]:
        stored: list[StoredImage] = []
        try:
            for index, image in enumerate(images):
                try:
                    info = await asyncio.to_thread(inspect_image, image.data, param=f"output[{index}]")
                except ImagegateError:
                    raise BackendError("The backend returned bytes that are not an image.") from None
                name = new_output_name(info.format)
                key = f"images/{name}"
                await self.ctx.storage.put(key, image.data)
                stored.append(StoredImage(name, key, info))
        except BaseException:
            await self._discard(stored)
            raise
        return stored

    async def _discard(self, stored: list[StoredImage]) -> None:
        for image in stored:
            await self.ctx.storage.delete(image.storage_key)


class _NotLoaded(Exception):
    """The job's row could not be read because the database is unavailable."""


async def _whole(work: Coroutine[Any, Any, T]) -> T:
    """Run a database write to its end even if the caller is cancelled meanwhile, then honour the cancel.

    A transaction cut off mid-statement can leave its connection, and on SQLite the write lock, held.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        raise
