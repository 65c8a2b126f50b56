"""The hot transactions' one hand-off: on a SQLite file one writer thread runs each whole transaction."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Connection, event, text

from imagegate import onehop
from imagegate.db import create_engine


class Refused(Exception):
    """Raised inside a transaction to see it rolled back."""


def _write(connection: Connection, value: int) -> tuple[str, int]:
    connection.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": value})
    return threading.current_thread().name, int(connection.execute(text("PRAGMA busy_timeout")).scalar_one())


async def test_a_sqlite_transaction_runs_whole_in_one_writer_thread_with_the_pragmas(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (v INTEGER)"))
        first = await onehop.transaction(engine, lambda connection: _write(connection, 1))
        second = await onehop.transaction(engine, lambda connection: _write(connection, 2))
        async with engine.connect() as connection:
            written = (await connection.execute(text("SELECT v FROM t ORDER BY v"))).scalars().all()
    finally:
        await engine.dispose()
    assert first[0] == second[0] != threading.current_thread().name
    assert first[0].startswith("imagegate-sqlite-writer")
    assert first[1] >= 5000  # db.py's pragmas on the writer's connection too
    assert written == [1, 2]  # committed, and seen by the async engine's connections


async def test_a_failed_transaction_writes_nothing(database_url: str) -> None:
    engine = create_engine(database_url)

    def refused(connection: Connection) -> None:
        connection.execute(text("INSERT INTO t (v) VALUES (1)"))
        raise Refused

    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (v INTEGER)"))
        with pytest.raises(Refused):
            await onehop.transaction(engine, refused)
        async with engine.connect() as connection:
            count = (await connection.execute(text("SELECT count(*) FROM t"))).scalar_one()
    finally:
        await engine.dispose()
    assert count == 0


async def test_statement_listeners_on_sync_engines_see_the_hot_transactions(database_url: str) -> None:
    engine = create_engine(database_url)
    seen: list[str] = []

    def statement(_conn: object, _cursor: object, sql: str, *_args: object) -> None:
        seen.append(sql)

    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (v INTEGER)"))
        for each in onehop.sync_engines(engine):
            event.listen(each, "before_cursor_execute", statement)
        await onehop.transaction(engine, lambda connection: connection.execute(text("INSERT INTO t (v) VALUES (7)")))
    finally:
        await engine.dispose()
    assert seen == ["INSERT INTO t (v) VALUES (7)"]
