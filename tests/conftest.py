"""Shared fixtures: every database test runs on SQLite and on a real PostgreSQL server (helpers: tests/helpers.py).

Under pytest-xdist (`make test`) each worker is a process of its own with its own session fixtures: its own
PostgreSQL server, template database, temp folder (and so metrics folders) and fake upstreams.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from _pytest.nodeid import NodeId

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

SHARED_SCOPES = ("class", "module", "package")
_hosts_networks: set[str] = set()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `--dist loadgroup`: a module's tests that share a fixture wider than one test (a server, a browser,
    the hosts) run on one worker, so that it starts once per run rather than once per worker; and the tests that
    start real processes are handed out first, so that no long one is left running alone at the end."""
    if not config.getoption("loadgroup", False):  # what pytest-xdist tells its workers under --dist loadgroup
        return
    for item in items:
        if _shares_a_fixture(item):
            _join_group(item, item.nodeid.split("::")[0])
    items.sort(key=lambda item: item.get_closest_marker("acceptance") is None)


def _join_group(item: pytest.Item, group: str) -> None:
    item.add_marker(pytest.mark.xdist_group(group))
    # pytest-xdist 3.8 tells the scheduler a test's group by appending it to the node id, which pytest 9 no longer
    # lets it do (pytest-xdist issue 1386: the mark is then silently ignored); this does what its fix does.
    if isinstance(getattr(item, "_id", None), NodeId):
        item._id = NodeId.parse(f"{item.nodeid}@{group}")


def _shares_a_fixture(item: pytest.Item) -> bool:
    # The fixtures an item requests are known at collection only through this attribute (pytest has no public one).
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(defs and defs[-1].scope in SHARED_SCOPES for defs in info.name2fixturedefs.values())


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember which network tests/hosts ran on (its tests record it), wherever the test ran."""
    for name, value in report.user_properties:
        if name == "hosts":
            _hosts_networks.add(str(value))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Which network tests/hosts ran on (namespaces or loopback) is never left unsaid."""
    for line in sorted(_hosts_networks):
        terminalreporter.write_line(f"tests/hosts: {line}")


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
