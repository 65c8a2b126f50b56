"""Leases: a running job is its worker's while the lease is renewed; a lapsed lease is taken over, a live one never."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from imagegate import hosts
from imagegate.db import utcnow
from imagegate.jobs import leases
from imagegate.jobs.models import Job, Worker
from tests.helpers import Harness, HarnessFactory, dead_pid, stored_job, submit, wait_status

# No housekeeping round of the harness's own during these tests: each calls the recovery sweep itself.
QUIET = {"worker_heartbeat_seconds": 3600.0, "worker_lease_seconds": 3 * 3600.0, "poll_interval_seconds": 3600.0}


async def _held_elsewhere(harness: Harness, auth: dict[str, str], *, lease_in: float | None, beat_ago: float) -> str:
    """A running job held by a worker on another host, with the lease and heartbeat given (seconds from now)."""
    job_id = await submit(harness, "gate:elsewhere", auth)
    await harness.fake.wait_started(1)
    now = utcnow()
    async with harness.app.state.services.sessions() as session, session.begin():
        session.add(
            Worker(id="wrk_other", hostname="another-host", pid=1, heartbeat_at=now - timedelta(seconds=beat_ago))
        )
        await session.flush()
        lease = None if lease_in is None else now + timedelta(seconds=lease_in)
        await session.execute(update(Job).where(Job.id == job_id).values(worker_id="wrk_other", lease_until=lease))
    return job_id


async def test_a_job_whose_lease_lapsed_is_requeued_though_its_worker_still_beats(
    harness_with: HarnessFactory,
) -> None:
    async with harness_with(**QUIET) as harness:
        auth = await harness.auth()
        job_id = await _held_elsewhere(harness, auth, lease_in=-1, beat_ago=0)
        assert await harness.app.state.services.scheduler.recover() == [job_id]
        harness.fake.open("gate:elsewhere")
        await wait_status(harness, job_id, auth, "succeeded")
        assert (await stored_job(harness, job_id)).attempts == 2


async def test_a_live_lease_is_never_taken_however_old_the_heartbeat(harness_with: HarnessFactory) -> None:
    async with harness_with(**QUIET) as harness:
        auth = await harness.auth()
        job_id = await _held_elsewhere(harness, auth, lease_in=60, beat_ago=10**6)
        assert await harness.app.state.services.scheduler.recover() == []
        job = await stored_job(harness, job_id)
        assert (job.status, job.worker_id) == ("running", "wrk_other")
        harness.fake.open("gate:elsewhere")


async def test_a_row_without_a_lease_goes_by_its_workers_heartbeat(harness_with: HarnessFactory) -> None:
    async with harness_with(**QUIET) as harness:
        auth = await harness.auth()
        job_id = await _held_elsewhere(harness, auth, lease_in=None, beat_ago=0)
        assert await harness.app.state.services.scheduler.recover() == []
        stale = utcnow() - timedelta(seconds=harness.app.state.services.settings.worker_lease_seconds + 1)
        async with harness.app.state.services.sessions() as session, session.begin():
            await session.execute(update(Worker).where(Worker.id == "wrk_other").values(heartbeat_at=stale))
        assert await harness.app.state.services.scheduler.recover() == [job_id]
        harness.fake.open("gate:elsewhere")


async def test_a_claim_takes_a_lease_and_the_worker_renews_it(harness_with: HarnessFactory) -> None:
    async with harness_with(worker_heartbeat_seconds=0.1) as harness:
        auth = await harness.auth()
        job_id = await submit(harness, "gate:renewed", auth)
        await harness.fake.wait_started(1)
        claimed = await stored_job(harness, job_id)
        assert claimed.lease_until is not None
        assert claimed.lease_until > utcnow()
        lapsed = utcnow() - timedelta(seconds=1)
        async with harness.app.state.services.sessions() as session, session.begin():
            await session.execute(update(Job).where(Job.id == job_id).values(lease_until=lapsed))
        async with asyncio.timeout(60):  # a deadline, not a measurement
            while (await _lease(harness, job_id)) <= utcnow():
                await asyncio.sleep(0.05)
        harness.fake.open("gate:renewed")
        await wait_status(harness, job_id, auth, "succeeded")


async def _lease(harness: Harness, job_id: str) -> datetime:
    async with harness.app.state.services.sessions() as session:
        lease: datetime | None = await session.scalar(select(Job.lease_until).where(Job.id == job_id))
    assert lease is not None
    return lease


async def test_a_worker_on_another_machine_with_the_same_hostname_is_not_judged_by_this_machines_pids(
    harness_with: HarnessFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cloned machines share a hostname, and every Linux gives its initial PID namespace the same inode: only the
    # kernel's boot id tells them apart. The other machine's worker has a pid that does not exist here.
    other_boot = tmp_path / "boot_id"
    other_boot.write_text(f"{uuid.uuid4()}\n")
    with monkeypatch.context() as other_machine:
        other_machine.setattr(hosts, "BOOT_ID", other_boot)
        elsewhere = hosts.host_identity()
    async with harness_with(**QUIET) as harness:
        auth = await harness.auth()
        job_id = await submit(harness, "gate:cloned", auth)
        await harness.fake.wait_started(1)
        sessions = harness.app.state.services.sessions
        async with sessions() as session, session.begin():
            session.add(Worker(id="wrk_clone", hostname=elsewhere, pid=dead_pid(), heartbeat_at=utcnow()))
            await session.flush()
            lease = utcnow() + timedelta(seconds=60)
            await session.execute(update(Job).where(Job.id == job_id).values(worker_id="wrk_clone", lease_until=lease))
        me = harness.app.state.services.scheduler.worker_id
        workers = await leases.survey(sessions, me=me, lease_seconds=60)
        assert (workers.gone, workers.live) == (frozenset(), 2)
        assert await harness.app.state.services.scheduler.recover() == []
        assert (await stored_job(harness, job_id)).status == "running"
        harness.fake.open("gate:cloned")
