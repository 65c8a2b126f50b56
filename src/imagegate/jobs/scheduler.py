"""The worker pool: per-backend claim loops, heartbeats, recovery, cancellation and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from typing import NamedTuple

from imagegate.db import is_unavailable
from imagegate.jobs import leases, queue
from imagegate.jobs.queue import Claimed
from imagegate.jobs.runs import JobRunner, guard
from imagegate.jobs.service import JobContext
from imagegate.jobs.slots import Slots
from imagegate.webhooks.sender import WebhookSender

logger = logging.getLogger(__name__)


class _Run(NamedTuple):
    """A claimed job running in this process."""

    claimed: Claimed
    task: asyncio.Task[None]


class Scheduler:
    """Runs queued jobs: fair across keys, bounded per backend, safe across several processes."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.worker_id = "wrk_" + secrets.token_hex(8)
        self._wake = {name: asyncio.Event() for name in ctx.backends.backends}
        self._slots = {name: Slots(self._share(limit, workers=1)) for name, limit in ctx.backends.concurrency.items()}
        self._running: dict[str, _Run] = {}
        self.runner = JobRunner(ctx)
        self._claims_in_flight = 0  # claimed in the database but maybe not yet in _running
        self._full: set[str] = set()  # backends whose last claim found jobs waiting but the limit reached
        self._ended = dict.fromkeys(ctx.backends.backends, 0)  # runs ended here, per backend
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
        await leases.register_worker(self.ctx.sessions, self.worker_id)
        await self.recover()
        for backend in self.ctx.backends.backends:
            self._loops.append(asyncio.create_task(self._claim_loop(backend), name=f"claim:{backend}"))
        self._loops.append(asyncio.create_task(self._heartbeat_loop(), name="heartbeat"))
        self.webhooks.start()

    async def recover(self) -> list[str]:
        """Requeue or fail the jobs of workers that died or whose leases lapsed, and those this worker lost track of.

        Also takes this process's share of each backend's limit, as many workers as are live now.
        """
        lease_seconds = self.ctx.settings.worker_lease_seconds
        workers = await leases.survey(self.ctx.sessions, me=self.worker_id, lease_seconds=lease_seconds)
        self._resize_slots(workers.live)
        settled = await leases.recover_interrupted(
            self.ctx.sessions,
            me=self.worker_id,
            lease_seconds=lease_seconds,
            workers=workers,
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
        tracked = set(self._running)  # a run that ends while the read is under way was read as running
        rows = await queue.running_on(self.ctx.sessions, self.worker_id)
        if self._claims_in_flight:  # a job claimed this instant may not be tracked yet: judge at the next sweep
            return []
        return [row for row in rows if row.job_id not in tracked and row.job_id not in self._running]

    async def _settle_lost(self) -> list[str]:
        lost = await self.lost_jobs()
        retry = self.ctx.settings.interrupted_jobs == "retry"
        settled = []
        for claimed in lost:
            status = await queue.settle_interrupted(self.ctx.sessions, claimed, None, retry=retry)
            if status is None:  # fenced: the row ended or moved on meanwhile, so it was not lost
                continue
            logger.warning("job %s was running here untracked; now %s", claimed.job_id, status)
            settled.append(claimed.job_id)
        return settled

    async def wedged_backends(self) -> dict[str, str]:
        """Backends whose slots are held by jobs that cannot end: backend → why (empty when all is well)."""
        wedged = {backend: "results waiting for the database" for backend in self.runner.unrecorded.values()}
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
        run = self._running.get(job_id)
        if run is None:
            return False
        self.runner.cancelling.add(job_id)
        run.task.cancel()
        return True

    def _stop_lost(self, run: _Run) -> bool:
        """Another process took the job over: stop this copy at once; it writes nothing (the row is not its own).

        False when there is nothing to stop: the run ended meanwhile (its own end is why the row was not renewed)
        or is recording its end, which is fenced.
        """
        if run.task.done() or not self.runner.lose(run.claimed):
            return False
        logger.warning("job %s: lease taken over by another worker; stopping the copy here", run.claimed.job_id)
        run.task.cancel()
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
        running = [run.task for run in self._running.values()]
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
            await leases.unregister_worker(self.ctx.sessions, self.worker_id)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            # Its jobs' leases lapse instead; another worker (or the next start) settles what it left running.
            logger.warning("could not unregister worker %s: database unavailable", self.worker_id)

    async def _claim_loop(self, backend: str) -> None:
        wake, slots = self._wake[backend], self._slots[backend]
        limit = self.ctx.backends.concurrency[backend]
        # Look before claiming only when nothing said a job waits: an idle loop then never takes the write lock.
        look_first = True
        while await self._slot(slots):
            wake.clear()
            self._claims_in_flight += 1
            count = 1 + slots.spare()  # one claim takes as many jobs as this process has free slots
            try:
                claimed = await self._claim(backend, limit, count, look_first=look_first)
            except Exception as exc:
                self._claims_in_flight -= 1
                slots.release()
                if is_unavailable(exc):
                    logger.warning(
                        "claiming a %s job: database unavailable (%s); retrying", backend, type(exc).__name__
                    )
                else:
                    logger.exception("claiming a %s job failed; retrying", backend)
                look_first = not await self._pause(wake)
                continue
            if not claimed:
                self._claims_in_flight -= 1
                slots.release()
                look_first = not await self._pause(wake)
                continue
            slots.hold(len(claimed) - 1)
            self._claims_in_flight += len(claimed) - 1
            for job in claimed:
                self._start(backend, job, slots)
            # The claim said whether others wait; if none did, the next job announces itself (or the poll finds it).
            # Fewer than asked with others waiting: the backend's limit is reached, so a job's end wakes the loop.
            more = claimed[-1].more_queued and len(claimed) == count
            look_first = False if more else not await self._pause(wake)

    def _start(self, backend: str, claimed: Claimed, slots: Slots) -> None:
        if self.ctx.metrics is not None:
            self.ctx.metrics.queue_wait.labels(backend).observe(claimed.queued_seconds)
        earlier = self._running.get(claimed.job_id)
        if earlier is not None:  # a copy of an earlier attempt still runs here: that attempt is over
            self._stop_lost(earlier)
        task = asyncio.create_task(self.runner.run(backend, claimed), name=f"job:{claimed.job_id}")
        self._running[claimed.job_id] = _Run(claimed, task)
        self._claims_in_flight -= 1
        task.add_done_callback(functools.partial(self._finished, backend, claimed, slots))
        if claimed.webhook:
            self.webhooks.wake()  # its 'running' event may wait to be sent
        self.ctx.events.notify(claimed.job_id, claimed.job)  # its waiters learn it runs here and stop polling

    async def _claim(self, backend: str, limit: int, count: int, *, look_first: bool) -> list[Claimed]:
        """The claim of up to count jobs, one statement; a read first (look_first) or after an empty one, never both."""
        if look_first and not await self._any_queued(backend):
            return []
        ended = self._ended[backend]
        claimed = await queue.claim(
            self.ctx.sessions,
            backend=backend,
            limit=limit,
            worker_id=self.worker_id,
            lease_seconds=self.ctx.settings.worker_lease_seconds,
            count=count,
        )
        if claimed:
            limited = len(claimed) < count and claimed[-1].more_queued  # others wait, but not in the backend's limit
        else:
            limited = look_first or await self._any_queued(backend)
        if not limited:
            self._full.discard(backend)
        else:
            self._full.add(backend)
            if self._ended[backend] != ended:  # a job here ended meanwhile, before it could see the backend full
                self.wake(backend)
        return claimed

    async def _any_queued(self, backend: str) -> bool:
        return await queue.any_queued(self.ctx.sessions, backend=backend)

    async def _slot(self, slots: Slots) -> bool:
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

    def _finished(self, backend: str, claimed: Claimed, slots: Slots, task: asyncio.Task[None]) -> None:
        slots.release()
        self._ended[backend] += 1
        if backend in self._full:  # its slot is one the backend's limit kept a waiting job from: claim it now
            self.wake(backend)
        run = self._running.get(claimed.job_id)
        if run is None or run.task is not task:  # the copy of an earlier attempt: the job runs on without it
            return
        del self._running[claimed.job_id]
        self.runner.cancelling.discard(claimed.job_id)
        self.ctx.events.notify(claimed.job_id, self.runner.succeeded.pop(claimed.job_id, None))
        if claimed.webhook:
            self.webhooks.wake()  # its final event may wait to be sent

    async def _pause(self, wake: asyncio.Event) -> bool:
        """Until work is announced, the poll interval passes, or the scheduler stops; True when work was announced."""
        if wake.is_set():
            return True
        waits = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(self._stop.wait())]
        await asyncio.wait(waits, timeout=self.ctx.settings.poll_interval_seconds, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waits:
            waiter.cancel()
        return wake.is_set()

    async def _heartbeat_loop(self) -> None:
        settings = self.ctx.settings
        # At least three renewals per lease: a late one or two (a busy event loop, a slow database) lose nothing.
        interval = min(
            settings.worker_heartbeat_seconds, settings.worker_lease_seconds / 3, settings.poll_interval_seconds * 5
        )
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)
            if not self._stopping:
                await guard(self._beat)

    async def _beat(self) -> None:
        await self.renew()
        await self.recover()

    async def renew(self) -> list[str]:
        """Extend this worker's leases; stop the runs it no longer holds (returns them) and those a caller cancels."""
        runs = dict(self._running)
        renewal = await leases.renew(
            self.ctx.sessions,
            self.worker_id,
            lease_seconds=self.ctx.settings.worker_lease_seconds,
            runs={job_id: run.claimed.attempt for job_id, run in runs.items()},
        )
        stopped = [job_id for job_id in renewal.lost if self._stop_lost(runs[job_id])]
        for job_id in renewal.cancel:
            self.cancel_local(job_id)
        return stopped

    def _share(self, limit: int, *, workers: int) -> int:
        return leases.slots_for(limit, workers=workers, configured=self.ctx.settings.worker_slots)

    def _resize_slots(self, workers: int) -> None:
        for backend, limit in self.ctx.backends.concurrency.items():
            slots = self._slots[backend]
            share = self._share(limit, workers=workers)
            if share != slots.capacity:
                logger.info("%s: %d slot(s) in this process (%d live worker(s))", backend, share, workers)
                slots.resize(share)
                self.wake(backend)

    def running_jobs(self) -> list[str]:
        """The jobs with a run in this process now (a stopped copy counts until it has ended)."""
        return list(self._running)

    def slot_counts(self) -> dict[str, int]:
        """Backend → how many of its jobs this process may run at once now."""
        return {backend: slots.capacity for backend, slots in self._slots.items()}
