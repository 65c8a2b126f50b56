"""Push hand-offs on PostgreSQL: two apps on one database stand for two processes; no poll would be in time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from imagegate.jobs.notify import APPLICATION_NAME, Listener
from tests.helpers import ASYNC, GENERATE, Harness, make_settings, new_pg_database, start, submit, wait_status

# Polls, heartbeats and leases far longer than any test: only a notification can hand a job over in time.
NEVER = {"poll_interval_seconds": 3600.0, "worker_heartbeat_seconds": 3600.0, "worker_lease_seconds": 3 * 3600.0}
DEADLINE = 60.0  # a deadline, not a measurement

Apps = Callable[..., AbstractAsyncContextManager[Harness]]


@pytest.fixture
def apps(pg_base_url: str, tmp_path: Path) -> Apps:
    """A factory of apps on one fresh PostgreSQL database and one data folder, each as its own process would be."""
    database_url = new_pg_database(pg_base_url)

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[Harness]:
        async for running in start(make_settings(database_url, tmp_path / "data", **{**NEVER, **overrides})):
            await _listening(running)
            yield running

    return factory


def _listener(harness: Harness) -> Listener:
    listener: Listener = harness.app.state.services.listener
    return listener


async def _listening(harness: Harness, connections: int = 1) -> None:
    listener = _listener(harness)
    async with asyncio.timeout(DEADLINE):
        while listener.connections < connections or not listener.listening.is_set():
            await asyncio.sleep(0.02)


async def test_a_job_queued_by_an_api_process_starts_at_once_on_an_idle_worker_elsewhere(apps: Apps) -> None:
    async with apps(run_scheduler=False) as api, apps() as worker:
        auth = await api.auth()
        job_id = await submit(api, "handed over", auth)
        await wait_status(api, job_id, auth, "succeeded", timeout=DEADLINE)
        assert worker.fake.started == ["handed over"]


async def test_a_sync_request_is_answered_as_soon_as_another_process_finishes_its_job(apps: Apps) -> None:
    async with apps(run_scheduler=False, wait_timeout_seconds=DEADLINE) as api, apps() as worker:
        auth = await api.auth()
        answer = asyncio.create_task(api.client.post(GENERATE, json={"prompt": "gate:sync"}, headers=auth))
        await worker.fake.wait_started(1, timeout=DEADLINE)
        worker.fake.open("gate:sync")
        response = await answer
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "succeeded"


async def _drop_listeners(harness: Harness) -> None:
    """Terminate every listening connection on the database, as a failover or a network cut would."""
    async with harness.app.state.services.sessions() as session:
        ended = await session.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name AND datname = current_database()"
            ),
            {"name": APPLICATION_NAME},
        )
    assert ended == 2


async def test_a_dropped_listen_connection_reconnects_and_pushes_again(apps: Apps) -> None:
    async with apps(run_scheduler=False) as api, apps() as worker:
        auth = await api.auth()
        await _drop_listeners(api)
        await _listening(worker, connections=2)
        job_id = await submit(api, "after the reconnect", auth)
        await wait_status(api, job_id, auth, "succeeded", timeout=DEADLINE)


async def test_a_job_queued_while_nobody_listened_is_found_on_the_reconnect(apps: Apps) -> None:
    async with apps(run_scheduler=False) as api, apps() as worker:
        auth = await api.auth()
        await _drop_listeners(api)
        response = await api.client.post(GENERATE, json={"prompt": "in the gap"}, headers={**auth, **ASYNC})
        assert response.status_code == 202
        await _listening(worker, connections=2)
        await wait_status(api, response.json()["id"], auth, "succeeded", timeout=DEADLINE)
