"""The configured admin password when several processes start together on a fresh database."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from imagegate.admin import service
from imagegate.admin.models import AdminCredential
from imagegate.db import create_engine, session_factory

PROCESSES = 6


async def test_processes_starting_together_adopt_the_configured_password(database_url: str) -> None:
    # Each "process" has its own engine, as separate processes would; none finds a row, all write one.
    engines = [create_engine(database_url) for _ in range(PROCESSES)]
    try:
        factories = [session_factory(engine) for engine in engines]
        await asyncio.gather(
            *(service.adopt_configured_password(sessions, "the-configured-password") for sessions in factories)
        )
        sessions = factories[0]
        async with sessions() as session:
            assert await session.scalar(select(func.count()).select_from(AdminCredential)) == 1
        assert await service.check_password(sessions, "the-configured-password")
    finally:
        for engine in engines:
            await engine.dispose()
