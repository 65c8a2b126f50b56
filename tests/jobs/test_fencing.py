"""A worker that lost its job's lease stops its copy, and no stale copy can write a job's end."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from imagegate.db import utcnow
from imagegate.errors import BackendError
from imagegate.images import ImageInfo
from imagegate.jobs import leases, queue
from imagegate.jobs.models import Job, JobImage, JobStatus
from imagegate.jobs.queue import Claimed, StoredImage
from imagegate.services import services_of
from tests.helpers import Harness, HarnessFactory, stored_job, submit, wait_status

# No housekeeping round of the harness's own: each test renews or takes leases itself.
QUIET = {"worker_heartbeat_seconds": 3600.0, "worker_lease_seconds": 3 * 3600.0, "poll_interval_seconds": 3600.0}
OTHER = "wrk_other"


async def _running_job(harness: Harness, prompt: str) -> tuple[str, dict[str, str], Job]:
    auth = await harness.auth()
    job_id = await submit(harness, prompt, auth)
    await harness.fake.wait_started(1)
    return job_id, auth, await stored_job(harness, job_id)


async def _taken_over(harness: Harness, job: Job) -> None:
    """What another worker's take-over of the lapsed lease and its claim leave: its attempt, its lease."""
    async with services_of(harness.app).sessions() as session, session.begin():
        await session.execute(
            update(Job)
            .where(Job.id == job.id, Job.worker_id == job.worker_id, Job.attempts == job.attempts)
            .values(worker_id=OTHER, attempts=job.attempts + 1, lease_until=utcnow() + timedelta(hours=1))
        )


async def _until_running(harness: Harness, count: int) -> None:
    """Until the fake backend runs exactly `count` calls (a deadline, not a measurement)."""
    async with asyncio.timeout(30):
        while harness.fake.running != count:
            await asyncio.sleep(0.02)


async def _run_ends(harness: Harness, job_id: str, auth: dict[str, str], prompt: str) -> None:
    """Let the held run end and wait until its record is written and it has left the running set."""
    harness.fake.open(prompt)
    await wait_status(harness, job_id, auth, "succeeded")
    scheduler = services_of(harness.app).scheduler
    assert scheduler is not None
    async with asyncio.timeout(30):  # a deadline, not a measurement
        while job_id in scheduler.running_jobs():
            await asyncio.sleep(0.02)


async def _image_rows(harness: Harness, job_id: str) -> int:
    async with services_of(harness.app).sessions() as session:
        return int(await session.scalar(select(func.count()).where(JobImage.job_id == job_id)) or 0)


async def _stored_keys(harness: Harness) -> list[str]:
    return [item.key async for item in services_of(harness.app).storage.list("images/")]


async def _new_owner_finishes(harness: Harness, job: Job) -> datetime | None:
    opened = services_of(harness.app)
    data = b"the new owner's image"
    await opened.storage.put("images/new-owner.png", data)
    image = StoredImage("new-owner.png", "images/new-owner.png", ImageInfo(8, 8, "png", len(data), "0" * 64))
    claimed = Claimed(job.id, job.attempts + 1, worker_id=OTHER)
    return await queue.finish_succeeded(opened.sessions, claimed, [image], "new owner\n", {})


async def test_a_run_whose_lease_was_taken_is_stopped_and_writes_nothing(harness_with: HarnessFactory) -> None:
    async with harness_with(**QUIET) as harness:
        job_id, auth, job = await _running_job(harness, "gate:taken")
        await _taken_over(harness, job)
        scheduler = services_of(harness.app).scheduler
        assert scheduler is not None
        assert await scheduler.renew() == [job_id]
        await _until_running(harness, 0)  # stopped while its backend call was still held open
        harness.fake.open("gate:taken")
        row = await stored_job(harness, job_id)
        assert (row.status, row.worker_id, row.attempts, row.logs) == ("running", OTHER, job.attempts + 1, job.logs)
        assert await _new_owner_finishes(harness, job) is not None
        await wait_status(harness, job_id, auth, "succeeded")
        assert await _image_rows(harness, job_id) == 1
        assert await _stored_keys(harness) == ["images/new-owner.png"]
        assert not await scheduler.lost_jobs()


async def test_a_renewal_keeps_the_runs_it_still_holds(harness_with: HarnessFactory) -> None:
    async with harness_with(**QUIET) as harness:
        job_id, auth, _job = await _running_job(harness, "gate:kept")
        scheduler = services_of(harness.app).scheduler
        assert scheduler is not None
        assert await scheduler.renew() == []
        assert harness.fake.running == 1
        harness.fake.open("gate:kept")
        await wait_status(harness, job_id, auth, "succeeded")


async def test_a_copy_that_ran_on_after_the_take_over_is_refused_and_its_files_removed(
    harness_with: HarnessFactory,
) -> None:
    async with harness_with(**QUIET) as harness:  # no renewal comes: the paused worker's copy ends on its own
        job_id, _auth, job = await _running_job(harness, "gate:paused")
        await _taken_over(harness, job)
        harness.fake.open("gate:paused")
        await _until_running(harness, 0)
        scheduler = services_of(harness.app).scheduler
        assert scheduler is not None
        async with asyncio.timeout(30):  # a deadline: its end is refused and its files go before the run ends
            while job_id in scheduler.running_jobs():
                await asyncio.sleep(0.02)
        row = await stored_job(harness, job_id)
        assert (row.status, row.worker_id, row.image_count) == ("running", OTHER, 0)
        assert await _image_rows(harness, job_id) == 0
        assert await _stored_keys(harness) == []


async def test_a_job_claimed_again_here_stops_the_earlier_copy(harness_with: HarnessFactory) -> None:
    async with harness_with(**QUIET) as harness:
        job_id, auth, job = await _running_job(harness, "gate:again")
        async with services_of(harness.app).sessions() as session, session.begin():  # as a take-over re-queues it
            await session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(status=JobStatus.QUEUED, worker_id=None, started_at=None, lease_until=None)
            )
        scheduler = services_of(harness.app).scheduler
        assert scheduler is not None
        scheduler.wake("fake")
        await harness.fake.wait_started(2)
        await _until_running(harness, 1)
        harness.fake.open("gate:again")
        await wait_status(harness, job_id, auth, "succeeded")
        assert (await stored_job(harness, job_id)).attempts == job.attempts + 1
        assert await _image_rows(harness, job_id) == 1
        assert not await scheduler.lost_jobs()


async def test_no_end_is_written_for_a_run_whose_row_another_worker_holds(harness_with: HarnessFactory) -> None:
    async with harness_with(**QUIET) as harness:
        job_id, _auth, job = await _running_job(harness, "gate:fenced")
        async with services_of(harness.app).sessions() as session, session.begin():  # same attempt, another worker
            await session.execute(update(Job).where(Job.id == job_id).values(worker_id=OTHER))
        sessions = services_of(harness.app).sessions
        stale = Claimed(job_id, job.attempts, worker_id=job.worker_id)
        image = StoredImage("stale.png", "images/stale.png", ImageInfo(8, 8, "png", 1, "0" * 64))
        assert await queue.finish_succeeded(sessions, stale, [image], "stale\n", {}) is None
        assert not await queue.finish_failed(sessions, stale, BackendError("stale"), "stale\n")
        assert not await queue.finish_cancelled(sessions, stale, "stale\n")
        assert await queue.settle_interrupted(sessions, stale, "stale\n", retry=True) is None
        assert await queue.settle_interrupted(sessions, stale, "stale\n", retry=False) is None
        row = await stored_job(harness, job_id)
        assert (row.status, row.worker_id, row.logs, row.error_code) == ("running", OTHER, job.logs, None)
        assert await _image_rows(harness, job_id) == 0
        async with services_of(harness.app).sessions() as session, session.begin():
            await session.execute(update(Job).where(Job.id == job_id).values(worker_id=job.worker_id))
        harness.fake.open("gate:fenced")


async def test_a_run_that_ends_during_a_renewal_is_not_taken_for_lost(
    harness_with: HarnessFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with harness_with(**QUIET) as harness:
        job_id, auth, _job = await _running_job(harness, "gate:ending")
        scheduler = services_of(harness.app).scheduler
        assert scheduler is not None
        renew = leases.renew

        async def renew_after_the_run_ended(*args: Any, **kwargs: Any) -> leases.Renewal:
            # the run ends between the renewal's look at its runs and its answer
            await _run_ends(harness, job_id, auth, "gate:ending")
            return await renew(*args, **kwargs)

        monkeypatch.setattr(leases, "renew", renew_after_the_run_ended)
        assert await scheduler.renew() == []
        assert not scheduler.runner.lost
        assert "taken over" not in caplog.text


async def test_a_run_that_ends_during_the_lost_jobs_read_is_not_taken_for_lost(
    harness_with: HarnessFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with harness_with(**QUIET) as harness:
        job_id, auth, _job = await _running_job(harness, "gate:read")
        scheduler = services_of(harness.app).scheduler
        assert scheduler is not None
        running_on = queue.running_on

        async def read_then_the_run_ends(*args: Any) -> list[Claimed]:
            rows = await running_on(*args)  # the read still sees the job running here
            await _run_ends(harness, job_id, auth, "gate:read")
            return rows

        monkeypatch.setattr(queue, "running_on", read_then_the_run_ends)
        assert await scheduler.lost_jobs() == []
        assert (await stored_job(harness, job_id)).status == "succeeded"


async def test_a_lost_job_that_ended_before_it_was_settled_is_not_reported(
    harness_with: HarnessFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with harness_with(**QUIET) as harness:
        job_id, auth, job = await _running_job(harness, "gate:ended")
        scheduler = services_of(harness.app).scheduler
        assert scheduler is not None
        harness.fake.open("gate:ended")
        await wait_status(harness, job_id, auth, "succeeded")
        stale = Claimed(job_id, job.attempts, job.model, backend=job.backend, worker_id=job.worker_id)

        async def read_before_it_ended() -> list[Claimed]:
            return [stale]

        monkeypatch.setattr(scheduler, "lost_jobs", read_before_it_ended)
        assert await scheduler.recover() == []
        assert "untracked" not in caplog.text
        assert (await stored_job(harness, job_id)).status == "succeeded"
