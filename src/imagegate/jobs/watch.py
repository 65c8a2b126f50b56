"""One look at the database per poll interval for all of this process's waiters, instead of one look each.

A waiter on a job this process runs hears of its end from the scheduler. A waiter on any other job (still
queued, or run by another process) read its whole job every poll interval: 2,000 held requests made 2,000
reads a second, and those reads starved the very claims the requests waited for. Now such a waiter tells the
watch which status it last saw; one statement per interval reads the status of all of them, and only the
waiters whose job changed are woken (they read their job then).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.db import is_unavailable
from imagegate.jobs.events import JobEvents
from imagegate.jobs.models import Job

logger = logging.getLogger(__name__)
# Ids per statement: well under SQLite's and PostgreSQL's limits on bound parameters.
CHUNK = 500


class JobWatch:
    """The statuses this process's waiters last saw, compared with the database's every interval."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], events: JobEvents, interval: float) -> None:
        self._sessions = sessions
        self._events = events
        self._interval = interval
        self._followers: Counter[str] = Counter()
        self._seen: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.ticks = 0  # how many times it has looked (for tests)

    def start(self) -> None:
        """Begin looking, in the background."""
        self._task = asyncio.create_task(self._run(), name="job-watch")

    async def stop(self) -> None:
        """Stop looking (waiters still waiting fall back on their own, rarer, look)."""
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def running(self) -> bool:
        """Whether it looks for its waiters (else each waiter polls for itself)."""
        return self._task is not None and not self._task.done()

    @contextlib.contextmanager
    def follow(self, job_id: str) -> Iterator[None]:
        """While a waiter waits on the job; what it saw is told with saw()."""
        self._followers[job_id] += 1
        try:
            yield
        finally:
            self._followers[job_id] -= 1
            if self._followers[job_id] <= 0:
                del self._followers[job_id]
                self._seen.pop(job_id, None)

    def saw(self, job_id: str, status: str | None) -> None:
        """A waiter read the job in this status; None when the scheduler here will announce its end."""
        if status is None or job_id not in self._followers:
            self._seen.pop(job_id, None)
        else:
            self._seen[job_id] = status

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)
            if self._stop.is_set():
                return
            try:
                await self.look()
            except Exception as exc:
                if not is_unavailable(exc):
                    logger.exception("watching jobs for their waiters failed; retrying")
                else:
                    logger.warning("watching jobs for their waiters: database unavailable; retrying")

    async def look(self) -> None:
        """Wake the waiters whose job's status is no longer the one they saw (or that is gone)."""
        self.ticks += 1
        ids = list(self._seen)
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            async with self._sessions() as session:
                rows = await session.execute(select(Job.id, Job.status, Job.deleted_at).where(Job.id.in_(chunk)))
                now = {row.id: row.status for row in rows if row.deleted_at is None}
            for job_id in chunk:
                seen = self._seen.get(job_id)
                if seen is not None and now.get(job_id) != seen:
                    del self._seen[job_id]  # told once; the woken waiter says what it sees next
                    self._events.notify(job_id)
