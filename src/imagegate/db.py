"""Engine and session factory, the declarative Base, and the UTC timestamp type.

How verbs are given the database (every service verb in jobs/, keys/, admin/ and retention), always keyword-only,
so that a signature says who owns the transaction:

- `session: AsyncSession` — the verb runs inside the caller's transaction and never commits; the caller opens it
  (`async with sessions() as session, session.begin():`) and may group several verbs in it.
- `sessions: async_sessionmaker[AsyncSession]` — the verb opens, commits and closes its own transaction(s).
- `ctx: JobContext` — a job verb that also needs storage, backends or events; it carries `sessions` and opens
  its own transactions like the line above.

Named reads (jobs/queries.py, admin/queries.py) and the queue's own statements (jobs/queue.py, leases.py, notify.py)
take `session` or `sessions` first, positionally; the name says who commits in the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, DateTime, MetaData, event, func, literal
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SQLITE_BUSY_TIMEOUT_MS = 30_000
# asyncpg's errors for a server that is down, starting, shutting down or out of connections (by name: the
# driver is only imported when PostgreSQL is used).
ASYNCPG_OUTAGE_ERRORS = frozenset(
    {
        "CannotConnectNowError",
        "ConnectionDoesNotExistError",
        "ConnectionFailureError",
        "AdminShutdownError",
        "CrashShutdownError",
        "TooManyConnectionsError",
        "InterfaceError",
    }
)


class Base(DeclarativeBase):
    """Declarative base whose constraint names are stable across SQLite and PostgreSQL."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


ModelT = TypeVar("ModelT", bound=Base)


def detached(model: type[ModelT], values: Mapping[str, Any], **collections: Sequence[Any]) -> ModelT:
    """A transient object holding values and its relationships' collections, for reading only (never flushed).

    Built the way the ORM builds a loaded row, without an attribute event per column: a Job made with Job(**values)
    costs ~40 change events on the event loop, for an object nobody will flush.
    """
    instance: ModelT = model.__mapper__.class_manager.new_instance()
    instance.__dict__.update(values)
    for key, items in collections.items():
        set_committed_value(instance, key, list(items))
    return instance


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def db_time(session: AsyncSession, offset_seconds: float = 0.0) -> ColumnElement[datetime]:
    """Now (plus an offset) by the database's clock on PostgreSQL, where hosts' clocks may disagree.

    SQLite's processes share one host and its clock, and SQLite has no date arithmetic on our timestamps.
    """
    offset = timedelta(seconds=offset_seconds)
    if session.get_bind().dialect.name == "postgresql":
        return func.now() + offset if offset_seconds else func.now()
    return literal(utcnow() + offset, UTCDateTime)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def is_unavailable(error: BaseException) -> bool:
    """Whether an error means the database cannot be reached or used right now: an outage, not a bug."""
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated or isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
            return True
        return error.orig is not None and is_unavailable(error.orig)
    # The pool ran dry; the server refused or reset; the driver gave up connecting (asyncpg raises a bare TimeoutError).
    if isinstance(error, sa_exc.TimeoutError | ConnectionError | TimeoutError):
        return True
    if any(
        cls.__module__.startswith("asyncpg") and cls.__name__ in ASYNCPG_OUTAGE_ERRORS for cls in type(error).__mro__
    ):
        return True
    # SQLAlchemy's asyncpg adapter raises its own error from the driver's (a server still starting, for one).
    cause = error.__cause__
    return cause is not None and cause is not error and is_unavailable(cause)


def create_engine(database_url: str) -> AsyncEngine:
    """An async engine for the URL; SQLite gets WAL, busy_timeout and foreign keys on every connection.

    Statement parameters (key hashes, prompts, session ids) never appear in its errors or logs.
    """
    if database_url.startswith("sqlite"):
        _ensure_sqlite_folder(database_url)
        engine = create_async_engine(database_url, pool_size=8, max_overflow=8, pool_timeout=60, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(database_url, pool_size=10, max_overflow=20, pool_pre_ping=True, hide_parameters=True)


def _ensure_sqlite_folder(database_url: str) -> None:
    path = database_url.split(":///", 1)[-1].split("?", 1)[0]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded attributes after commit (responses are rendered after it)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def engine_of(sessions: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    """The engine the sessions use: the queue's hot statements run on its connections, without a Session."""
    engine = sessions.kw["bind"]
    if not isinstance(engine, AsyncEngine):
        raise TypeError("the sessions are not bound to an engine")
    return engine


T = TypeVar("T")


async def write_to_the_end(work: Coroutine[Any, Any, T]) -> T:
    """Run a database write to its end even if the caller is cancelled meanwhile, then honour the cancel.

    A transaction cut off mid-statement can leave its connection, and on SQLite the write lock, held.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        raise
