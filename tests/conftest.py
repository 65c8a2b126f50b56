"""Shared fixtures: every database test runs on SQLite and on a real PostgreSQL server (helpers: tests/helpers.py)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from imagegate.cli.common import metrics_folder
from imagegate.migrations import upgrade
from imagegate.settings import Settings
from imagegate.testing import cheap_password_hashing
from tests.fakes.postgres import postgres_server
from tests.helpers import (
    TEMPLATE_DB,
    Harness,
    HarnessFactory,
    create_pg_database,
    drop_pg_database,
    make_settings,
    new_pg_database,
    start,
)


@pytest.fixture(scope="session", autouse=True)
def _cheap_password_hashing() -> Iterator[None]:
    """Every app the tests start in-process hashes its admin password in microseconds, not ~130 ms."""
    with cheap_password_hashing():
        yield


@pytest.fixture(scope="session", autouse=True)
def _metrics_folders_removed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Server processes started by tests share metrics in a folder named after their data folder (in /dev/shm);
    remove the ones named after this run's folders, which nothing else uses."""
    yield
    base = tmp_path_factory.getbasetemp()
    for folder in (base, *(path for path in base.rglob("*") if path.is_dir())):
        shutil.rmtree(metrics_folder(Settings.model_construct(data_dir=folder, metrics_dir=None)), ignore_errors=True)


@pytest.fixture(scope="session")
def pg_base_url() -> Iterator[str]:
    """A PostgreSQL server for the whole run, with a migrated template database."""
    with postgres_server() as base:
        asyncio.run(create_pg_database(base, TEMPLATE_DB))
        upgrade(f"{base}/{TEMPLATE_DB}")
        yield base


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database of each kind; a PostgreSQL one is dropped when the test ends."""
    if request.param == "sqlite":
        target = tmp_path / "imagegate.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        yield f"sqlite+aiosqlite:///{target}"
        return
    base = request.getfixturevalue("pg_base_url")
    url = new_pg_database(base)
    yield url
    asyncio.run(drop_pg_database(base, url.rpartition("/")[2]))


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Test settings on the parametrised database."""
    return make_settings(database_url, tmp_path / "data")


@pytest.fixture
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    """The app on the parametrised database."""
    async for running in start(settings):
        yield running


@pytest.fixture
def harness_with(database_url: str, tmp_path: Path) -> HarnessFactory:
    """A factory: `async with harness_with(**setting_overrides) as h:` runs an app with those settings."""

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[Harness]:
        async for running in start(make_settings(database_url, tmp_path / "data", **overrides)):
            yield running

    return factory
