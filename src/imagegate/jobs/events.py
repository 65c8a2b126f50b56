"""The in-process bus between the API and the scheduler: wake-ups for waiters, workers and cancels; partial images.

Events only make this process faster: another process polls the database for the same news, and so does this
one when it misses an event. Partial images are the exception: only a request served by the process that runs
the job sees them.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imagegate.jobs.models import Job


QUEUED_HERE_KEPT = 1024


class JobEvents:
    """Job id → events of the requests waiting on it, plus listeners for new and cancelled jobs."""

    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        # The job as the last announcement of its change described it, kept only while someone waits on it.
        self._latest: dict[str, Job] = {}
        self._queued_listeners: list[Callable[[str], None]] = []
        self._cancel_listeners: list[Callable[[str], object]] = []
        self._webhook_listeners: list[Callable[[], None]] = []
        self._partials: defaultdict[str, set[asyncio.Queue[tuple[int, bytes]]]] = defaultdict(set)
        # Jobs this process queued lately: their NOTIFY coming back from PostgreSQL needs no second wake-up.
        self._queued_here: OrderedDict[str, None] = OrderedDict()
        # The worker id of this process's scheduler: jobs it runs are announced here, no polling needed.
        self.local_worker: str | None = None
        # Set when the process begins to shut down: waiters answer instead of waiting for jobs it will not run.
        self.draining = asyncio.Event()

    def drain(self) -> None:
        """The process is shutting down: wake every waiter so it can answer with the job as it stands."""
        self.draining.set()
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()

    @contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the job changes state; subscribe before reading the job to miss nothing."""
        event = asyncio.Event()
        self._waiters[job_id].add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[job_id]
                    self._latest.pop(job_id, None)

    def notify(self, job_id: str, job: Job | None = None) -> None:
        """Wake everyone waiting on the job; with the job as it now stands, they need not read it."""
        waiters = self._waiters.get(job_id)
        if not waiters:
            return
        if job is None:
            self._latest.pop(job_id, None)
        else:
            self._latest[job_id] = job
        for event in waiters:
            event.set()

    def latest(self, job_id: str) -> Job | None:
        """The job as the last announcement described it; None when that one came without it."""
        return self._latest.get(job_id)

    @contextmanager
    def subscribe_partials(self, job_id: str) -> Iterator[asyncio.Queue[tuple[int, bytes]]]:
        """A queue of (index, bytes) partial images of a job run by this process."""
        queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        self._partials[job_id].add(queue)
        try:
            yield queue
        finally:
            queues = self._partials.get(job_id)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._partials[job_id]

    def partial(self, job_id: str, index: int, data: bytes) -> None:
        """A backend produced a partial image for the job (its waiters are woken too)."""
        for queue in self._partials.get(job_id, ()):
            queue.put_nowait((index, data))
        self.notify(job_id)

    def on_queued(self, listener: Callable[[str], None]) -> None:
        """Call listener(backend) whenever a job is queued for that backend."""
        self._queued_listeners.append(listener)

    def queued(self, backend: str, job_id: str | None = None) -> None:
        """A job was queued for the backend (job_id when this process queued it)."""
        if job_id is not None:
            self.queuing_here(job_id)
        for listener in self._queued_listeners:
            listener(backend)

    def queuing_here(self, job_id: str) -> None:
        """This process is about to commit the job: its NOTIFY may come back before the commit returns."""
        self._queued_here[job_id] = None
        while len(self._queued_here) > QUEUED_HERE_KEPT:
            self._queued_here.popitem(last=False)

    def queued_here(self, job_id: str) -> bool:
        """Whether this process queued the job lately (and so already woke its own workers)."""
        return job_id in self._queued_here

    def wake_all(self) -> None:
        """Wake every waiter to look at its job again (news may have been missed)."""
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()

    def on_cancel(self, listener: Callable[[str], object]) -> None:
        """Call listener(job_id) whenever a caller cancels a running job."""
        self._cancel_listeners.append(listener)

    def cancel(self, job_id: str) -> None:
        """A caller asked to cancel a running job."""
        for listener in self._cancel_listeners:
            listener(job_id)

    def on_webhook(self, listener: Callable[[], None]) -> None:
        """Call listener() whenever this process queued a webhook delivery."""
        self._webhook_listeners.append(listener)

    def webhook_queued(self) -> None:
        """A webhook delivery was committed: the sender need not wait for its poll."""
        for listener in self._webhook_listeners:
            listener()
