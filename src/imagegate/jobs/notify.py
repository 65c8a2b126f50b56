"""Push hand-offs between processes on PostgreSQL: NOTIFY when a job is queued or finishes, LISTEN in every process.

A notification only makes another process faster: idle workers and waiters still poll, and that polling is
the whole story on SQLite and while the listening connection is down (it reconnects by itself). Each NOTIFY
is sent in the transaction that makes the change, so it is delivered on commit and never for a rollback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, String, bindparam, func, literal
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from imagegate.jobs.events import JobEvents
from imagegate.jobs.models import Job

logger = logging.getLogger(__name__)

QUEUED = "imagegate_job_queued"  # payload: "<backend> <job id>"
FINISHED = "imagegate_job_finished"  # payload: "<job id> <worker id that ran it>"
APPLICATION_NAME = "imagegate-listen"  # how the listening connection shows in pg_stat_activity
RECONNECT_FIRST_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 10.0
# A connection dropped without a word (a dead host, a cut network) is looked at this often.
CHECK_SECONDS = 5.0


def finished_returning(session: AsyncSession, job_id: str) -> tuple[ColumnElement[Any], ...]:
    """The NOTIFY of the job's end as a RETURNING column of the UPDATE that ends it (PostgreSQL; none elsewhere).

    Sent on commit, and only when that UPDATE changed the row.
    """
    if session.get_bind().dialect.name != "postgresql":
        return ()
    payload = literal(f"{job_id} ") + func.coalesce(Job.worker_id, "")
    return (func.pg_notify(FINISHED, payload).label("notified"),)


def queued_returning(dialect: str) -> tuple[ColumnElement[Any], ...]:
    """The NOTIFY of a queued job as a RETURNING column of its INSERT, its payload bound as 'queued_notice'."""
    if dialect != "postgresql":
        return ()
    return (func.pg_notify(QUEUED, bindparam("queued_notice", type_=String())).label("notified"),)


def queued_notice(*, backend: str, job_id: str) -> str:
    """The payload queued_returning sends."""
    return f"{backend} {job_id}"


class Listener:
    """One connection per process that LISTENs and turns notifications into this process's job events."""

    def __init__(self, database_url: str, events: JobEvents, backends: Iterable[str]) -> None:
        self._dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._events = events
        self._backends = list(backends)
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.listening = asyncio.Event()  # set while notifications arrive; polling alone meanwhile
        self.connections = 0  # how many times it has (re)connected

    @classmethod
    def for_url(cls, database_url: str, events: JobEvents, backends: Iterable[str]) -> Listener | None:
        """A listener for a PostgreSQL database; None on SQLite, where polling is the only path."""
        if make_url(database_url).get_backend_name() != "postgresql":
            return None
        return cls(database_url, events, backends)

    def start(self) -> None:
        """Begin listening in the background."""
        self._task = asyncio.create_task(self._run(), name="listen")

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        delay = RECONNECT_FIRST_SECONDS
        while not self._stop.is_set():
            connection = await self._connect()
            if connection is None:
                await self._pause(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
                continue
            delay = RECONNECT_FIRST_SECONDS
            try:
                await self._listen(connection)
            finally:
                self.listening.clear()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), CHECK_SECONDS)
            if not self._stop.is_set():
                logger.warning("the LISTEN connection was lost; polling until it is back")

    async def _connect(self) -> Any:
        import asyncpg  # only with PostgreSQL

        try:
            connection = await asyncpg.connect(self._dsn, server_settings={"application_name": APPLICATION_NAME})
            await connection.add_listener(QUEUED, self._queued)
            await connection.add_listener(FINISHED, self._finished)
        except Exception as exc:
            logger.warning("cannot LISTEN for job hand-offs (%s); polling meanwhile", type(exc).__name__)
            return None
        return connection

    async def _listen(self, connection: Any) -> None:
        """Until the connection drops or the listener stops."""
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        self.connections += 1
        self.listening.set()
        self._catch_up()
        while not (lost.is_set() or self._stop.is_set() or connection.is_closed()):
            waits = [asyncio.ensure_future(lost.wait()), asyncio.ensure_future(self._stop.wait())]
            await asyncio.wait(waits, timeout=CHECK_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waits:
                waiter.cancel()

    def _catch_up(self) -> None:
        """Whatever was announced while nobody listened: every claim loop and waiter looks now."""
        for backend in self._backends:
            self._events.queued(backend)
        self._events.wake_all()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def _queued(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        backend, _, job_id = payload.partition(" ")
        if not self._events.queued_here(job_id):  # this process's claim loop already knows
            self._events.queued(backend)

    def _finished(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        job_id, _, worker_id = payload.partition(" ")
        if not worker_id or worker_id != self._events.local_worker:  # this process announces its own, job in hand
            self._events.notify(job_id)
