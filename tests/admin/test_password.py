"""The admin password: adopted once by processes starting together; hashed with argon2's defaults outside tests."""

from __future__ import annotations

import asyncio
import subprocess
import sys

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
            *(
                service.adopt_configured_password(sessions=sessions, password="the-configured-password")
                for sessions in factories
            )
        )
        sessions = factories[0]
        async with sessions() as session:
            assert await session.scalar(select(func.count()).select_from(AdminCredential)) == 1
        assert await service.check_password(sessions=sessions, password="the-configured-password")
    finally:
        for engine in engines:
            await engine.dispose()


PRODUCTION_PREFIX = "$argon2id$v=19$m=65536,t=3,p=4$"  # argon2-cffi's defaults: RFC 9106's low-memory profile
HASHES_IN_A_FRESH_PROCESS = """
from imagegate.admin.password import password_hasher
from imagegate.testing import cheap_password_hashing
print(password_hasher().hash("a password"))
with cheap_password_hashing():
    print(password_hasher().hash("a password"))
print(password_hasher().hash("a password"))
"""


def test_production_hashes_keep_argon2_defaults_and_the_test_hook_restores_them() -> None:
    # A fresh interpreter, as `imagegate serve` is: the test run's own cheap hasher is not in it.
    run = subprocess.run(
        [sys.executable, "-c", HASHES_IN_A_FRESH_PROCESS], capture_output=True, text=True, timeout=60, check=True
    )
    before, during, after = run.stdout.split()
    assert before.startswith(PRODUCTION_PREFIX)
    assert during.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert after.startswith(PRODUCTION_PREFIX)


async def test_apps_in_this_test_run_hash_cheaply(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        sessions = session_factory(engine)
        await service.set_password(sessions=sessions, password="a long enough password", actor="cli")
        async with sessions() as session:
            stored = await session.scalar(select(AdminCredential.password_hash))
        assert stored is not None
        assert stored.startswith("$argon2id$v=19$m=8,t=1,p=1$")
        assert await service.check_password(sessions=sessions, password="a long enough password")
        assert not await service.check_password(sessions=sessions, password="another password")
    finally:
        await engine.dispose()
