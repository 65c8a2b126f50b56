"""A job's end is recorded even when the database fails meanwhile; rows nobody runs are found and settled."""

from __future__ import annotations

from sqlalchemy import update

from imagegate.jobs.models import Job, JobStatus
from tests.helpers import Harness, HarnessFactory, submit, wait_status


async def test_a_row_its_own_live_worker_lost_track_of_is_reported_then_settled(
    harness_with: HarnessFactory,
) -> None:
    # No housekeeping round of its own during the test: it calls the recovery sweep itself.
    async with harness_with(poll_interval_seconds=3600, worker_heartbeat_seconds=3600) as harness:
        await _lost_track(harness)


async def _lost_track(harness: Harness) -> None:
    auth = await harness.auth()
    job_id = await submit(harness, "lost", auth)
    await wait_status(harness, job_id, auth, "succeeded")
    scheduler = harness.app.state.services.scheduler
    # As a run whose record failed leaves it: running, owned by this live worker, which no longer runs it.
    async with harness.app.state.services.sessions() as session, session.begin():
        await session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status=JobStatus.RUNNING, worker_id=scheduler.worker_id, finished_at=None)
        )

    ready = await harness.client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["backends"] == "wedged"
    assert list(ready.json()["wedged_backends"]) == ["fake"]

    assert await scheduler.recover() == [job_id]
    await wait_status(harness, job_id, auth, "succeeded")  # requeued and run again
    assert (await harness.client.get("/ready")).status_code == 200
