"""The queue and its scheduler: fairness, concurrency, queue-full, restart recovery, shutdown."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select, update

from imagegate.hosts import host_identity
from imagegate.jobs import service
from imagegate.jobs.models import Job, JobInput, JobStatus, Worker
from tests.fakes.backends import tiny_png
from tests.helpers import ASYNC, GENERATE, Harness, HarnessFactory, b64, dead_pid, fake_backends, submit, wait_status


async def test_a_backlog_does_not_make_another_key_wait_behind_it(harness_with: HarnessFactory) -> None:
    async with harness_with(backends=fake_backends(concurrency=1)) as harness:
        a, b = await harness.auth("a"), await harness.auth("b")
        await submit(harness, "gate:a0", a)
        await harness.fake.wait_started(1)
        a_jobs = [await submit(harness, f"a{i}", a) for i in range(1, 6)]
        b_jobs = [await submit(harness, f"b{i}", b) for i in range(1, 3)]
        harness.fake.open("gate:a0")
        await harness.fake.wait_started(8)
        assert harness.fake.started == ["gate:a0", "b1", "a1", "b2", "a2", "a3", "a4", "a5"]
        await wait_status(harness, a_jobs[-1], a, "succeeded")
        await wait_status(harness, b_jobs[-1], b, "succeeded")


async def test_backend_concurrency_is_bounded(harness_with: HarnessFactory) -> None:
    async with harness_with(backends=fake_backends(concurrency=2)) as harness:
        auth = await harness.auth()
        ids = [await submit(harness, f"gate:{i}", auth) for i in range(5)]
        await harness.fake.wait_started(2)
        async with harness.app.state.services.sessions() as session:
            running = await session.scalar(select(func.count()).where(Job.status == JobStatus.RUNNING))
        assert running == 2
        for i in range(5):
            harness.fake.open(f"gate:{i}")
        await wait_status(harness, ids[-1], auth, "succeeded")
        assert harness.fake.max_running == 2


async def test_queue_full_is_429_and_writes_nothing(harness_with: HarnessFactory) -> None:
    async with harness_with(backends=fake_backends(concurrency=1), queue_max_size=2) as harness:
        auth = await harness.auth()
        await submit(harness, "gate:running", auth)
        await harness.fake.wait_started(1)
        await submit(harness, "q1", auth)
        await submit(harness, "q2", auth)
        body = {"prompt": "one too many", "reference_image_base64": b64(tiny_png())}
        response = await harness.client.post(GENERATE, json=body, headers=auth)
        assert response.status_code == 429
        assert response.headers["retry-after"].isdigit()
        assert response.json()["error"]["code"] == "queue_full"
        async with harness.app.state.services.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(Job)) == 3
            assert await session.scalar(select(func.count()).select_from(JobInput)) == 0
        inputs = harness.app.state.services.settings.data_dir / "files" / "inputs"
        assert not inputs.exists() or not any(inputs.rglob("*.png"))
        harness.fake.open("gate:running")


async def _orphan_running_job(harness: Harness, auth: dict[str, str], *, attempts: int) -> str:
    """A job left 'running' by a worker that died (a process on this host that no longer exists)."""
    job_id = await submit(harness, "gate:orphan", auth)
    await harness.fake.wait_started(1)
    async with harness.app.state.services.sessions() as session, session.begin():
        session.add(Worker(id="wrk_dead", hostname=host_identity(), pid=dead_pid()))
        await session.flush()
        await session.execute(update(Job).where(Job.id == job_id).values(worker_id="wrk_dead", attempts=attempts))
    return job_id


# No housekeeping round of the harness's own: it would settle the orphan before the test's own sweep does.
QUIET = {"worker_heartbeat_seconds": 3600.0, "worker_lease_seconds": 3 * 3600.0, "poll_interval_seconds": 3600.0}


async def test_a_job_whose_worker_died_is_retried_once(harness_with: HarnessFactory) -> None:
    async with harness_with(**QUIET) as harness:
        await _retried_once(harness)


async def _retried_once(harness: Harness) -> None:
    auth = await harness.auth()
    job_id = await _orphan_running_job(harness, auth, attempts=1)
    settled = await harness.app.state.services.scheduler.recover()
    assert settled == [job_id]
    harness.fake.open("gate:orphan")
    await wait_status(harness, job_id, auth, "succeeded")
    async with harness.app.state.services.sessions() as session:
        job = await session.scalar(select(Job).where(Job.id == job_id))
        assert job is not None
        assert job.attempts == 2
        assert await session.get(Worker, "wrk_dead") is None


async def test_a_job_interrupted_twice_fails_with_a_clear_reason(harness_with: HarnessFactory) -> None:
    async with harness_with(**QUIET) as harness:
        await _interrupted_twice(harness)


async def _interrupted_twice(harness: Harness) -> None:
    auth = await harness.auth()
    job_id = await _orphan_running_job(harness, auth, attempts=2)
    await harness.app.state.services.scheduler.recover()
    response = await harness.client.get(f"/v1/images/jobs/{job_id}", headers=auth)
    assert response.json()["status"] == "failed"
    assert response.json()["error_code"] == "interrupted"
    assert "restart" in response.json()["error"]
    harness.fake.open("gate:orphan")


async def test_fail_policy_fails_interrupted_jobs_at_once(harness_with: HarnessFactory) -> None:
    async with harness_with(interrupted_jobs="fail", **QUIET) as harness:
        auth = await harness.auth()
        job_id = await _orphan_running_job(harness, auth, attempts=1)
        await harness.app.state.services.scheduler.recover()
        response = await harness.client.get(f"/v1/images/jobs/{job_id}", headers=auth)
        assert response.json()["status"] == "failed"
        harness.fake.open("gate:orphan")


async def test_shutdown_requeues_running_jobs_after_the_grace_period(harness_with: HarnessFactory) -> None:
    async with harness_with(shutdown_grace_seconds=0.2) as harness:
        auth = await harness.auth()
        job_id = await submit(harness, "gate:never", auth)
        await harness.fake.wait_started(1)
        sessions = harness.app.state.services.sessions
    async with sessions() as session:
        job = await session.scalar(select(Job).where(Job.id == job_id))
        assert job is not None
        assert job.status == JobStatus.QUEUED
        assert "interrupted by shutdown" in job.logs
        assert await session.scalar(select(func.count()).select_from(Worker)) == 0


async def test_shutdown_lets_running_jobs_finish_within_the_grace(harness_with: HarnessFactory) -> None:
    async with harness_with(shutdown_grace_seconds=10) as harness:
        auth = await harness.auth()
        job_id = await submit(harness, "gate:finishing", auth)
        await harness.fake.wait_started(1)
        sessions = harness.app.state.services.sessions
        asyncio.get_running_loop().call_soon(harness.fake.open, "gate:finishing")
    async with sessions() as session:
        job = await session.scalar(select(Job).where(Job.id == job_id))
        assert job is not None
        assert job.status == JobStatus.SUCCEEDED


# A deadline, not a measurement: 60 jobs took 176 s on PostgreSQL on a machine loaded twelve to two cores.
PARALLEL_DEADLINE_SECONDS = 900


async def test_many_parallel_requests_all_succeed(harness: Harness) -> None:
    keys = [await harness.auth(f"k{i}") for i in range(4)]

    async def one(i: int) -> str:
        # Submitted async, so the answer never depends on how the wait timeout compares with the machine's load.
        body = {"prompt": f"parallel {i}", "size": "16x16"}
        response = await harness.client.post(GENERATE, json=body, headers={**keys[i % 4], **ASYNC})
        assert response.status_code == 202, response.text
        job = await service.wait_until_finished(
            ctx=harness.app.state.services.jobs,
            job_id=response.json()["id"],
            key=None,
            timeout=PARALLEL_DEADLINE_SECONDS,
        )
        return job.status

    statuses = await asyncio.gather(*(one(i) for i in range(60)))
    assert statuses == [JobStatus.SUCCEEDED] * 60
    async with harness.app.state.services.sessions() as session:
        assert await session.scalar(select(func.count()).where(Job.status == JobStatus.SUCCEEDED)) == 60
