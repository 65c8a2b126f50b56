"""The queue's hot transactions (the claim, the finish, the lease renewal) in one thread hand-off each.

Why this exists: through aiosqlite every statement, the BEGIN and the COMMIT each cross from the event loop to
aiosqlite's thread and back (with SQLAlchemy's async adaption around it), which cost ~640 µs of CPU a statement
where sqlite3 itself takes ~85 µs. So on a SQLite file a hot transaction is written as one synchronous function of a
Connection, and the whole function runs in one dedicated thread on a synchronous engine of the same file (pysqlite,
the same pragmas, WAL): one hand-off per transaction. One thread also serialises these writers, so they never
busy-wait on each other for SQLite's write lock. On PostgreSQL (and an in-memory SQLite, which a second engine
could not share) the same function runs on the async engine's connection through `AsyncConnection.run_sync`.

Whatever counts or watches statements listens on `sync_engines(engine)`: the synchronous engine is a second one.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import Connection, Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.ext.asyncio import AsyncEngine

from imagegate.db import _sqlite_pragmas

T = TypeVar("T")


class _Writer:
    """A synchronous engine on the async engine's SQLite file and the one thread that runs its transactions."""

    def __init__(self, engine: AsyncEngine) -> None:
        url = engine.url.set(drivername="sqlite+pysqlite")
        self.engine = create_sync_engine(
            url, pool_size=1, max_overflow=0, hide_parameters=True, connect_args={"check_same_thread": False}
        )
        event.listen(self.engine, "connect", _sqlite_pragmas)
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagegate-sqlite-writer")

    def run(self, work: Callable[[Connection], T]) -> T:
        """One transaction: begin, the work, commit (or roll back), all in the writer thread."""
        with self.engine.begin() as connection:
            return work(connection)

    def close(self) -> None:
        """Close the engine in its own thread, then let the thread end."""
        self.thread.submit(self.engine.dispose)
        self.thread.shutdown(wait=False)


_writers: weakref.WeakKeyDictionary[Engine, _Writer] = weakref.WeakKeyDictionary()


def _writer(engine: AsyncEngine) -> _Writer | None:
    """The engine's SQLite writer, made at first use and closed with the engine; None when the file cannot be shared."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    writer = _writers.get(engine.sync_engine)
    if writer is None:
        writer = _writers[engine.sync_engine] = _Writer(engine)
        event.listen(engine.sync_engine, "engine_disposed", lambda _engine: _close(engine.sync_engine))
    return writer


def _close(sync_engine: Engine) -> None:
    writer = _writers.pop(sync_engine, None)
    if writer is not None:
        writer.close()


def sync_engines(engine: AsyncEngine) -> list[Engine]:
    """Every engine the async engine's statements run on: its own and, on a SQLite file, the writer's."""
    writer = _writer(engine)
    return [engine.sync_engine] if writer is None else [engine.sync_engine, writer.engine]


async def transaction(engine: AsyncEngine, work: Callable[[Connection], T]) -> T:
    """Run `work` as one transaction of the engine's database, in one thread hand-off on SQLite."""
    writer = _writer(engine)
    if writer is None:
        async with engine.begin() as connection:
            return await connection.run_sync(work)
    return await asyncio.get_running_loop().run_in_executor(writer.thread, writer.run, work)
