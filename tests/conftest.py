"""Shared fixtures: every database test runs on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx2
import pytest
from fastapi import FastAPI

from imagegate.app import create_app
from imagegate.keys import service as keys
from imagegate.keys.models import ApiKey
from imagegate.keys.service import KeyLimits
from imagegate.migrations import upgrade
from imagegate.settings import BackendConfig, Settings
from tests.fakes.backends import FakeBackend
from tests.fakes.postgres import postgres_server

FAKE_TYPE = "tests.fakes.backends:FakeBackend"
TEMPLATE_DB = "imagegate_template"
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_base_url() -> Iterator[str]:
    """A PostgreSQL server for the whole run, with a migrated template database."""
    with postgres_server() as base:
        asyncio.run(_create_database(base, TEMPLATE_DB))
        upgrade(f"{base}/{TEMPLATE_DB}")
        yield base


async def _create_database(base: str, name: str, template: str | None = None) -> None:
    connection = await asyncpg.connect(base.replace("postgresql+asyncpg", "postgresql") + "/postgres")
    try:
        suffix = f" TEMPLATE {template} STRATEGY FILE_COPY" if template else ""
        await connection.execute(f'CREATE DATABASE "{name}"{suffix}')
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated database of each kind."""
    if request.param == "sqlite":
        target = tmp_path / "imagegate.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite+aiosqlite:///{target}"
    return new_pg_database(request.getfixturevalue("pg_base_url"))


def new_pg_database(base: str) -> str:
    """A fresh migrated PostgreSQL database (copied from the template); its URL."""
    name = f"t_{next(_counter)}"
    asyncio.run(_create_database(base, name, TEMPLATE_DB))
    return f"{base}/{name}"


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for tests: the fake backend as default, short waits, everything under data_dir."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "backends": fake_backends(),
        "models": {"fake-model": "fake", "demo": "demo"},
        "default_model": "fake-model",
        "wait_timeout_seconds": 10.0,
        "poll_interval_seconds": 0.2,
        "shutdown_grace_seconds": 5.0,
        "admin_password": "test-admin-password",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Test settings on the parametrised database."""
    return make_settings(database_url, tmp_path / "data")


class Harness:
    """A running app, an HTTP client on it, and helpers to make keys."""

    def __init__(self, app: FastAPI, client: httpx2.AsyncClient) -> None:
        self.app = app
        self.client = client

    @property
    def fake(self) -> FakeBackend:
        """The app's FakeBackend instance."""
        backend = self.app.state.jobs.backends.backends["fake"]
        assert isinstance(backend, FakeBackend)
        return backend

    async def new_key(self, name: str = "tester", **kwargs: Any) -> tuple[ApiKey, str]:
        """Create a key; returns it and its raw token."""
        async with self.app.state.sessions() as session, session.begin():
            return await keys.create_key(session=session, name=name, **kwargs)

    async def auth(self, name: str = "tester", **limits: Any) -> dict[str, str]:
        """Authorization headers for a new key with the given limits (KeyLimits fields)."""
        _key, token = await self.new_key(name, limits=KeyLimits(**limits))
        return {"Authorization": f"Bearer {token}"}


async def start(settings: Settings) -> AsyncIterator[Harness]:
    """Run the app's lifespan and yield a harness; shut it down afterwards."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Harness(app, client)


@pytest.fixture
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    """The app on the parametrised database."""
    async for running in start(settings):
        yield running


HarnessFactory = Callable[..., AbstractAsyncContextManager[Harness]]


@pytest.fixture
def harness_with(database_url: str, tmp_path: Path) -> HarnessFactory:
    """A factory: `async with harness_with(**setting_overrides) as h:` runs an app with those settings."""

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[Harness]:
        async for running in start(make_settings(database_url, tmp_path / "data", **overrides)):
            yield running

    return factory


def fake_backends(concurrency: int = 4) -> dict[str, BackendConfig]:
    """The standard test backends with the fake one's concurrency set."""
    return {
        "fake": BackendConfig(type=FAKE_TYPE, concurrency=concurrency),
        "demo": BackendConfig(type="demo", concurrency=2),
    }
