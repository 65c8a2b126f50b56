"""Waiters on jobs another process runs share one look at the database per interval (jobs/watch.py)."""

from __future__ import annotations

import asyncio

from sqlalchemy import update

from imagegate.db import utcnow
from imagegate.errors import NotFound
from imagegate.jobs import service
from imagegate.jobs.models import Job, JobStatus
from imagegate.jobs.service import JobContext
from imagegate.jobs.watch import JobWatch
from tests.helpers import Harness, HarnessFactory, counting, submit

WAITERS = 20
TICKS = 3


def _jobs(harness: Harness) -> tuple[JobContext, JobWatch]:
    ctx: JobContext = harness.app.state.services.jobs
    assert ctx.watch is not None
    return ctx, ctx.watch


async def _ticks(watch: JobWatch, count: int) -> None:
    """Until the watch has looked `count` more times."""
    target = watch.ticks + count
    async with asyncio.timeout(30):
        while watch.ticks < target:
            await asyncio.sleep(0.01)


async def _all_seen(watch: JobWatch, count: int) -> None:
    async with asyncio.timeout(30):
        while len(watch._seen) < count:
            await asyncio.sleep(0.01)


async def test_waiters_on_jobs_run_elsewhere_cost_one_statement_per_look(harness_with: HarnessFactory) -> None:
    # No scheduler here: the jobs are another process's to run, so every waiter would have to poll.
    async with harness_with(run_scheduler=False, poll_interval_seconds=0.05) as harness:
        ctx, watch = _jobs(harness)
        auth = await harness.auth()
        ids = [await submit(harness, f"elsewhere {i}", auth) for i in range(WAITERS)]
        waiters = [
            asyncio.create_task(service.wait_until_finished(ctx=ctx, job_id=job_id, key=None, timeout=60))
            for job_id in ids
        ]
        await _all_seen(watch, WAITERS)
        with counting(harness.app.state.services.engine) as counts:
            await _ticks(watch, TICKS)
        assert len(counts.statements) <= TICKS + 1, "\n".join(counts.statements)  # one look may be under way
        async with ctx.sessions() as session, session.begin():  # as the other process finishes them
            await session.execute(
                update(Job).where(Job.id.in_(ids)).values(status=JobStatus.SUCCEEDED, finished_at=utcnow())
            )
        async with asyncio.timeout(30):
            finished = await asyncio.gather(*waiters)
    assert [job.status for job in finished] == [JobStatus.SUCCEEDED] * WAITERS


async def test_a_job_deleted_elsewhere_ends_its_wait(harness_with: HarnessFactory) -> None:
    async with harness_with(run_scheduler=False, poll_interval_seconds=0.05) as harness:
        ctx, watch = _jobs(harness)
        job_id = await submit(harness, "deleted elsewhere", await harness.auth())
        waiter = asyncio.create_task(service.wait_until_finished(ctx=ctx, job_id=job_id, key=None, timeout=60))
        await _all_seen(watch, 1)
        async with ctx.sessions() as session, session.begin():
            await session.execute(update(Job).where(Job.id == job_id).values(deleted_at=utcnow()))
        async with asyncio.timeout(30):
            try:
                await waiter
            except NotFound:
                return
    raise AssertionError("the wait did not end with NotFound")
