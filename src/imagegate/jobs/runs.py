"""One claimed job's run: the backend call, its outputs to storage, and the record of its end (fenced by attempt)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from imagegate.backends import usage
from imagegate.backends.base import BackendRequest, JobReporter, OutputImage
from imagegate.db import is_unavailable, write_to_the_end
from imagegate.errors import BackendError, ImagegateError
from imagegate.jobs import outputs, queue, spend
from imagegate.jobs.build import backend_request
from imagegate.jobs.models import Job, JobStatus
from imagegate.jobs.queue import Claimed, StoredImage
from imagegate.jobs.service import JobContext

logger = logging.getLogger(__name__)
Outcome = tuple[str, str | None]  # (final status, error code)

# A finished job's record is retried this often while the database is away (doubling up to the maximum).
RECORD_RETRY_FIRST_SECONDS = 0.25
RECORD_RETRY_MAX_SECONDS = 5.0


class JobRunner:
    """Runs claimed jobs for the scheduler; knows which are being cancelled and which wait to be recorded."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.cancelling: set[str] = set()  # job ids a caller asked to stop
        # Runs (job id, attempt) whose job another process took over: stopped, they write nothing.
        self.lost: set[tuple[str, int]] = set()
        # Runs past their backend call, recording their end: that write is fenced, so a lost lease leaves them be.
        self.ending: set[tuple[str, int]] = set()
        self.unrecorded: dict[str, str] = {}  # job id → backend: finished, waiting for the database to record it
        # Jobs just recorded as succeeded, as recorded: the scheduler hands each to its waiters, then drops it.
        self.succeeded: dict[str, Job] = {}

    async def run(self, backend_name: str, claimed: Claimed) -> None:
        """Run the claimed job on the backend and record how it ended (retrying while the database is away)."""
        reporter = JobReporter(
            self.ctx.settings.job_log_max_bytes,
            on_partial=functools.partial(self.ctx.events.partial, claimed.job_id),
        )
        started = time.perf_counter()
        outcome: Outcome | None = None  # set when this run settled the job
        try:
            outcome = await self._attempt(backend_name, claimed, reporter)
        finally:
            self.ending.add(_run_key(claimed))  # its usage is recorded whatever happened to the job
            await guard(
                functools.partial(
                    usage.record,
                    self.ctx.sessions,
                    backend=backend_name,
                    job_id=claimed.job_id,
                    events=reporter.usage_events,
                )
            )
            self._observe(backend_name, claimed, outcome, time.perf_counter() - started)
            self.lost.discard(_run_key(claimed))
            self.ending.discard(_run_key(claimed))

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
            if _run_key(claimed) in self.lost:
                logger.warning("job %s: another worker took it over; this copy stopped", claimed.job_id)
                return None
            cancelled = await self._record(backend_name, claimed, lambda: self._settle_cancelled(claimed, reporter))
            return (JobStatus.CANCELLED, None) if cancelled else None
        except ImagegateError as error:
            failed = await self._record(
                backend_name, claimed, functools.partial(queue.finish_failed, sessions, claimed, error, reporter.text())
            )
            return (JobStatus.FAILED, error.code) if failed else None
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
            backend_name, claimed, lambda: self._finish(claimed, stored, reporter.text(), result.metadata)
        )
        if succeeded:
            return (JobStatus.SUCCEEDED, None)
        await self._discard(stored)
        return None

    def lose(self, claimed: Claimed) -> bool:
        """The job is no longer this run's: True when the run should stop now (False once it is recording its end)."""
        if _run_key(claimed) in self.ending:
            return False
        self.lost.add(_run_key(claimed))
        return True

    async def _finish(self, claimed: Claimed, stored: list[StoredImage], logs: str, metadata: dict[str, Any]) -> bool:
        # Priced now, into the finish's own UPDATE: a budget check then sums one column.
        cost = spend.cost(claimed.model, metadata, self.ctx.settings.prices)
        finished_at = await queue.finish_succeeded(self.ctx.sessions, claimed, stored, logs, metadata, cost)
        if finished_at is None:
            return False
        if claimed.job is not None:
            self.succeeded[claimed.job_id] = queue.succeeded_job(claimed.job, stored, logs, metadata, finished_at, cost)
        return True

    async def _record(self, backend: str, claimed: Claimed, write: Callable[[], Coroutine[Any, Any, bool]]) -> bool:
        """Write a job's end, retrying while the database is unavailable: the result is kept, never re-run.

        The backend has already done (and charged for) the work; only shutdown cuts the retries short, and then
        the next start's recovery settles the job.
        """
        self.ending.add(_run_key(claimed))
        delay = RECORD_RETRY_FIRST_SECONDS
        try:
            while True:
                try:
                    return await write_to_the_end(write())
                except Exception as exc:
                    if not is_unavailable(exc):
                        raise
                    if claimed.job_id not in self.unrecorded:
                        logger.warning(
                            "recording job %s waits for the database (%s); the result is kept",
                            claimed.job_id,
                            type(exc).__name__,
                        )
                    self.unrecorded[claimed.job_id] = backend
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECORD_RETRY_MAX_SECONDS)
        except asyncio.CancelledError:
            if claimed.job_id in self.unrecorded:
                logger.warning("job %s was not recorded before shutdown; the next start settles it", claimed.job_id)
            raise
        finally:
            if self.unrecorded.pop(claimed.job_id, None) is not None:
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
        if claimed.job_id in self.cancelling:
            return await queue.finish_cancelled(self.ctx.sessions, claimed, reporter.text())
        reporter.write("[interrupted by shutdown]\n")
        status = await queue.settle_interrupted(
            self.ctx.sessions, claimed, reporter.text(), retry=self.ctx.settings.interrupted_jobs == "retry"
        )
        logger.warning("job %s interrupted by shutdown: now %s", claimed.job_id, status)
        return False

    async def _backend_request(self, claimed: Claimed) -> BackendRequest:
        if claimed.job is None:  # every claim carries its row and inputs; only a settled job comes without
            raise BackendError("The job was not claimed by this run.")
        return await backend_request(claimed.job, self.ctx.storage)

    async def _store_outputs(self, images: list[OutputImage]) -> list[StoredImage]:
        return await outputs.store(images, storage=self.ctx.storage, recent=self.ctx.outputs)

    async def _discard(self, stored: list[StoredImage]) -> None:
        await outputs.discard(stored, storage=self.ctx.storage, recent=self.ctx.outputs)


def _run_key(claimed: Claimed) -> tuple[str, int]:
    return (claimed.job_id, claimed.attempt)


async def guard(work: Callable[[], Awaitable[None]]) -> None:
    """Run housekeeping work; a failure is logged and left for the next round."""
    try:
        await work()
    except Exception:
        logger.exception("scheduler housekeeping failed; will retry")
