"""Engine set-up: SQLite pragmas, and timestamps that come back timezone-aware on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi

from imagegate.db import create_engine, is_unavailable, session_factory
from imagegate.keys.models import ApiKey


async def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'nested' / 'x.db'}")
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await connection.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            busy_timeout = (await connection.execute(text("PRAGMA busy_timeout"))).scalar()
            assert busy_timeout is not None
            assert busy_timeout >= 5000
    finally:
        await engine.dispose()


async def test_timestamps_round_trip_as_utc(database_url: str) -> None:
    engine = create_engine(database_url)
    moment = datetime(2026, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    try:
        async with session_factory(engine)() as session, session.begin():
            session.add(ApiKey(handle="key_tz", name="tz", token_hash="0" * 64, created_at=moment))
        async with session_factory(engine)() as session:
            stored = await session.scalar(select(ApiKey.created_at).where(ApiKey.handle == "key_tz"))
    finally:
        await engine.dispose()
    assert stored == moment
    assert stored is not None
    assert stored.tzinfo is not None
    assert stored.utcoffset() == timedelta(0)
    assert stored.astimezone(UTC).hour == 10


async def test_naive_timestamps_are_refused(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with pytest.raises(Exception, match="naive datetime"):
            async with session_factory(engine)() as session, session.begin():
                session.add(ApiKey(handle="key_nv", name="n", token_hash="1" * 64, created_at=datetime(2026, 1, 1)))
    finally:
        await engine.dispose()


def test_a_driver_giving_up_connecting_is_an_outage_not_a_bug() -> None:
    # asyncpg raises a bare TimeoutError when the server is slow to accept (a restart under load): a job's
    # result must then wait for the database, not fail its run (which a recovery sweep would run again).
    assert is_unavailable(TimeoutError())
    assert is_unavailable(ConnectionRefusedError())
    assert not is_unavailable(ValueError("a bug"))


def test_a_server_still_starting_is_an_outage_through_the_adapters_error() -> None:
    # What a finish met in the second after PostgreSQL came back: SQLAlchemy's asyncpg adapter raises its own
    # error from the driver's CannotConnectNowError. Judged a bug, it ended the run unrecorded and the job ran again.
    starting = asyncpg.exceptions.CannotConnectNowError("the database system is not yet accepting connections")
    adapted = AsyncAdapt_asyncpg_dbapi.Error("the database system is not yet accepting connections")  # type: ignore[no-untyped-call]
    adapted.__cause__ = starting
    assert is_unavailable(sa_exc.DBAPIError("SELECT 1", None, adapted))
    bug = AsyncAdapt_asyncpg_dbapi.Error("syntax error")  # type: ignore[no-untyped-call]
    bug.__cause__ = asyncpg.exceptions.PostgresSyntaxError("syntax error")
    assert not is_unavailable(sa_exc.DBAPIError("SELECT 1", None, bug))
