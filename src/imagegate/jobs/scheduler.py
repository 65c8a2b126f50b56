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
from imagegate.backends.base import BackendRequest, InputImage, JobLog, OutputImage
from imagegate.errors import BackendError, ImagegateError
from imagegate.images import inspect_image
from imagegate.jobs import queue
from imagegate.jobs.models import Job, JobStatus
from imagegate.jobs.queue import Claimed, StoredImage
from imagegate.jobs.service import JobContext

logger = logging.getLogger(__name__)
T = TypeVar("T")

NAME_BYTES = 18


class Scheduler:
    """Runs queued jobs: fair across keys, bounded per backend, safe across several processes."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.worker_id = "wrk_" + secrets.token_hex(8)
        self._wake = {name: asyncio.Event() for name in ctx.backends.backends}
        self._slots = {name: asyncio.Semaphore(n) for name, n in ctx.backends.concurrency.items()}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._cancelling: set[str] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        self._stop = asyncio.Event()
        ctx.events.local_worker = self.worker_id
        ctx.events.on_queued(self.wake)
        ctx.events.on_cancel(self.cancel_local)

    async def start(self) -> None:
        """Register this worker, settle jobs of dead workers, and start claiming."""
        await queue.register_worker(self.ctx.sessions, self.worker_id)
        await self.recover()
        for backend in self.ctx.backends.backends:
            self._loops.append(asyncio.create_task(self._claim_loop(backend), name=f"claim:{backend}"))
        self._loops.append(asyncio.create_task(self._heartbeat_loop(), name="heartbeat"))

    async def recover(self) -> list[str]:
        """Requeue or fail the running jobs of workers that died."""
        settled = await queue.recover_interrupted(
            self.ctx.sessions,
            me=self.worker_id,
            stale_after=self.ctx.settings.worker_stale_seconds,
            retry=self.ctx.settings.interrupted_jobs == "retry",
        )
        if settled:
            logger.warning("settled %d job(s) interrupted by a stopped worker", len(settled))
            for backend in self._wake:
                self.wake(backend)
        return settled

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

    @property
    def running_jobs(self) -> int:
        """Jobs this process is running now."""
        return len(self._running)

    async def stop(self) -> None:
        """Stop claiming, give running jobs the grace period, then settle the rest as interrupted."""
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
        await queue.unregister_worker(self.ctx.sessions, self.worker_id)

    async def _claim_loop(self, backend: str) -> None:
        wake, slots = self._wake[backend], self._slots[backend]
        limit = self.ctx.backends.concurrency[backend]
        while await self._slot(slots):
            wake.clear()
            try:
                async with self.ctx.sessions() as session:
                    waiting = await queue.any_queued(session, backend=backend)
                claimed = None
                if waiting:
                    async with self.ctx.sessions() as session, session.begin():
                        claimed = await queue.claim(session, backend=backend, limit=limit, worker_id=self.worker_id)
            except Exception:
                slots.release()
                logger.exception("claiming a %s job failed; retrying", backend)
                await self._pause(wake)
                continue
            if claimed is None:
                slots.release()
                await self._pause(wake)
                continue
            if self.ctx.metrics is not None:
                self.ctx.metrics.queue_wait.labels(backend).observe(claimed.queued_seconds)
            task = asyncio.create_task(self._run(backend, claimed), name=f"job:{claimed.job_id}")
            self._running[claimed.job_id] = task
            task.add_done_callback(functools.partial(self._finished, claimed.job_id, slots))
            self.ctx.events.notify(claimed.job_id)  # its waiters learn it runs here and stop polling

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

    def _finished(self, job_id: str, slots: asyncio.Semaphore, _task: asyncio.Task[None]) -> None:
        self._running.pop(job_id, None)
        self._cancelling.discard(job_id)
        slots.release()
        self.ctx.events.notify(job_id)

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
        log = JobLog(
            self.ctx.settings.job_log_max_bytes,
            on_partial=functools.partial(self.ctx.events.partial, claimed.job_id),
        )
        sessions = self.ctx.sessions
        started = time.perf_counter()
        outcome: tuple[str, str | None] | None = None  # (final status, error code) when this run settled the job
        try:
            request = await self._backend_request(claimed)
            result = await self.ctx.backends.backends[backend_name].generate(request, log)
            if not result.images:
                raise BackendError("The backend returned no image.")
            stored = await self._store_outputs(result.images)
            if await _whole(queue.finish_succeeded(sessions, claimed, stored, log.text(), result.metadata)):
                outcome = (JobStatus.SUCCEEDED, None)
            else:
                await self._discard(stored)
        except asyncio.CancelledError:
            if await _whole(self._settle_cancelled(claimed, log)):
                outcome = (JobStatus.CANCELLED, None)
        except ImagegateError as error:
            if await _whole(queue.finish_failed(sessions, claimed, error, log.text())):
                outcome = (JobStatus.FAILED, error.code)
        except Exception as exc:
            logger.exception("job %s failed unexpectedly", claimed.job_id)
            log.write("".join(traceback.format_exception(exc)))
            unexpected = BackendError("The backend failed unexpectedly; see the job's logs.")
            if await _whole(queue.finish_failed(sessions, claimed, unexpected, log.text())):
                outcome = (JobStatus.FAILED, "unexpected")
        finally:
            await self._guard(
                functools.partial(
                    usage.record, sessions, backend=backend_name, job_id=claimed.job_id, events=log.usage_events
                )
            )
            self._observe(backend_name, claimed, outcome, time.perf_counter() - started)

    def _observe(self, backend: str, claimed: Claimed, outcome: tuple[str, str | None] | None, seconds: float) -> None:
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

    async def _settle_cancelled(self, claimed: Claimed, log: JobLog) -> bool:
        """True when the caller's cancel ended the job; False when shutdown put it back (or failed it)."""
        if claimed.job_id in self._cancelling:
            return await queue.finish_cancelled(self.ctx.sessions, claimed, log.text())
        log.write("[interrupted by shutdown]\n")
        status = await queue.settle_interrupted(
            self.ctx.sessions, claimed, log.text(), retry=self.ctx.settings.interrupted_jobs == "retry"
        )
        logger.warning("job %s interrupted by shutdown: now %s", claimed.job_id, status)
        return False

    async def _backend_request(self, claimed: Claimed) -> BackendRequest:
        async with self.ctx.sessions() as session:
            job = await session.scalar(select(Job).where(Job.id == claimed.job_id).options(selectinload(Job.inputs)))
        if job is None:
            raise BackendError("The job disappeared before it ran.")
        references, mask = [], None
        for item in job.inputs:
            image = InputImage(await self.ctx.storage.get(item.storage_key), item.width, item.height, item.format)
            if item.role == "mask":
                mask = image
            else:
                references.append(image)
        return BackendRequest(
            job_id=job.id,
            model=job.model,
            prompt=job.prompt,
            width=job.width,
            height=job.height,
            quality=job.quality,
            output_format=job.output_format,
            count=job.count,
            size=job.size,
            references=tuple(references),
            mask=mask,
            params=job.params,
        )

    async def _store_outputs(self, images: list[OutputImage]) -> list[StoredImage]:
        stored: list[StoredImage] = []
        try:
            for index, image in enumerate(images):
                try:
                    info = await asyncio.to_thread(inspect_image, image.data, param=f"output[{index}]")
                except ImagegateError:
                    raise BackendError("The backend returned bytes that are not an image.") from None
                name = f"{secrets.token_urlsafe(NAME_BYTES)}.{info.format}"
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
