"""The unit tier: validation, the claim, fair queuing and limits called directly, without an app or a server.

`pytest tests/unit` (or `pytest -m unit`) runs it alone in seconds; its database tests run on SQLite and
PostgreSQL like every other tier (`-k sqlite` skips the PostgreSQL server's start).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.db import create_engine, session_factory


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/unit carries the unit mark."""
    for item in items:
        if "tests/unit/" in item.nodeid:
            item.add_marker(pytest.mark.unit)


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a fresh migrated database of each kind, with no app around it."""
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()
