"""The job table's named reads: listings page newest first without skipping or repeating a job."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.db import create_engine, session_factory
from imagegate.jobs import queries
from imagegate.jobs.models import Job
from imagegate.keys.models import ApiKey

MOMENT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the parametrised database."""
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def _key(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session, session.begin():
        key = ApiKey(handle="key_pages", name="pages", token_hash="0" * 64)
        session.add(key)
        await session.flush()
        return key.id


async def _jobs(sessions: async_sessionmaker[AsyncSession], key_id: int, created: list[datetime]) -> list[str]:
    """Insert one job per creation time, in that order; their ids."""
    ids = [f"img_page{index:03d}" for index in range(len(created))]
    async with sessions() as session, session.begin():
        for job_id, at in zip(ids, created, strict=True):
            session.add(
                Job(
                    id=job_id,
                    key_id=key_id,
                    key_handle="key_pages",
                    model="fake-model",
                    backend="fake",
                    prompt=job_id,
                    size="auto",
                    width=64,
                    height=64,
                    quality="auto",
                    output_format="png",
                    count=1,
                    created_at=at,
                    expires_at=at + timedelta(days=1),
                )
            )
            await session.flush()  # one insert at a time: seq follows the list
    return ids


async def _every_page(sessions: async_sessionmaker[AsyncSession], key_id: int, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        async with sessions() as session:
            after = await queries.anchor_of(session, cursor, key_id=key_id) if cursor else None
            page = await queries.newest_first(session, queries.key_jobs(key_id), limit=limit, after=after)
        pages.append([job.id for job in page.jobs])
        if page.next_cursor is None:
            return pages
        assert len(pages) <= 10, "the cursor never ran out"
        cursor = page.next_cursor


async def test_jobs_created_in_the_same_instant_are_each_listed_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    key_id = await _key(sessions)
    ids = await _jobs(sessions, key_id, [MOMENT] * 5)

    pages = await _every_page(sessions, key_id, limit=2)

    assert pages == [ids[4:2:-1], ids[2:0:-1], ids[:1]]  # later inserts first, by seq


async def test_pages_run_newest_first_across_times_and_ties(sessions: async_sessionmaker[AsyncSession]) -> None:
    key_id = await _key(sessions)
    later = MOMENT + timedelta(seconds=1)
    ids = await _jobs(sessions, key_id, [later, MOMENT, later, MOMENT])

    pages = await _every_page(sessions, key_id, limit=3)

    assert pages == [[ids[2], ids[0], ids[3]], [ids[1]]]


async def test_a_full_last_page_has_no_next_cursor(sessions: async_sessionmaker[AsyncSession]) -> None:
    key_id = await _key(sessions)
    ids = await _jobs(sessions, key_id, [MOMENT, MOMENT + timedelta(seconds=1)])

    assert await _every_page(sessions, key_id, limit=2) == [ids[::-1]]
