"""Worker slots: each process takes its share of a backend's limit; a finished job's slot is claimed at once."""

from __future__ import annotations

import asyncio

from sqlalchemy import update

from imagegate.db import utcnow
from imagegate.jobs.leases import slots_for
from imagegate.jobs.models import Job, JobStatus, Worker
from tests.helpers import Harness, HarnessFactory, fake_backends, job_row, submit, wait_status


def test_the_share_is_the_limit_over_the_live_workers_rounded_up_or_the_setting() -> None:
    assert slots_for(8, workers=1, configured=None) == 8
    assert slots_for(8, workers=4, configured=None) == 2
    assert slots_for(3, workers=2, configured=None) == 2
    assert slots_for(2, workers=5, configured=None) == 1
    assert slots_for(8, workers=1, configured=3) == 3
    assert slots_for(2, workers=1, configured=5) == 2


async def test_another_live_worker_halves_this_ones_slots(harness_with: HarnessFactory) -> None:
    async with harness_with(backends=fake_backends(concurrency=4), worker_heartbeat_seconds=0.1) as harness:
        scheduler = harness.app.state.services.scheduler
        assert scheduler.slot_counts()["fake"] == 4
        async with harness.app.state.services.sessions() as session, session.begin():
            session.add(Worker(id="wrk_other", hostname="another-host", pid=1, heartbeat_at=utcnow()))
        async with asyncio.timeout(60):  # a deadline, not a measurement
            while scheduler.slot_counts()["fake"] != 2:
                await asyncio.sleep(0.05)


async def test_configured_slots_bound_this_process_below_the_backends_limit(harness_with: HarnessFactory) -> None:
    async with harness_with(backends=fake_backends(concurrency=4), worker_slots=1) as harness:
        auth = await harness.auth()
        ids = [await submit(harness, f"gate:{i}", auth) for i in range(3)]
        for i in range(3):
            await harness.fake.wait_started(i + 1)
            harness.fake.open(f"gate:{i}")
        await wait_status(harness, ids[-1], auth, "succeeded")
        assert harness.fake.max_running == 1


async def test_a_finishing_job_wakes_its_claim_loop_at_once(harness_with: HarnessFactory) -> None:
    # No poll would find the next job in time: only the finished job's own wake-up can start it.
    quiet = {"poll_interval_seconds": 3600.0, "worker_heartbeat_seconds": 3600.0, "worker_lease_seconds": 3 * 3600.0}
    async with harness_with(backends=fake_backends(concurrency=2), **quiet) as harness:
        auth = await harness.auth()
        first = await submit(harness, "gate:first", auth)
        await harness.fake.wait_started(1)
        await _hold_a_slot_elsewhere(harness)  # the backend's limit is now reached: a claim finds no room
        second = await submit(harness, "second", auth)
        harness.fake.open("gate:first")
        await wait_status(harness, first, auth, "succeeded")
        await wait_status(harness, second, auth, "succeeded")


async def _hold_a_slot_elsewhere(harness: Harness) -> None:
    """A job running on a live worker of another host: it takes one of the backend's slots."""
    async with harness.app.state.services.sessions() as session, session.begin():
        session.add(Worker(id="wrk_other", hostname="another-host", pid=1, heartbeat_at=utcnow()))
        row = job_row("other", status=JobStatus.RUNNING)
        session.add(row)
        await session.flush()
        await session.execute(update(Job).where(Job.id == row.id).values(worker_id="wrk_other"))
