"""The claim and fair queuing, on the job table alone: which queued job a worker takes, and when none."""

from __future__ import annotations

from sqlalchemy import func, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.db import utcnow
from imagegate.images import ImageInfo
from imagegate.jobs.models import Job, JobInput, JobKind, JobStatus
from imagegate.jobs.queue import Claimed, StoredImage, claim, succeeded_job
from tests.helpers import job_row as job


async def add(sessions: async_sessionmaker[AsyncSession], *jobs: Job) -> list[str]:
    """Queue the jobs in this order; their ids."""
    async with sessions() as session, session.begin():
        session.add_all(jobs)
    return [j.id for j in jobs]


async def take(sessions: async_sessionmaker[AsyncSession], limit: int = 10, backend: str = "fake") -> Claimed | None:
    """One claim of one job, in its own transaction, as a worker makes it."""
    claimed = await take_many(sessions, 1, limit=limit, backend=backend)
    assert len(claimed) <= 1
    return claimed[0] if claimed else None


async def take_many(
    sessions: async_sessionmaker[AsyncSession], count: int, *, limit: int = 10, backend: str = "fake"
) -> list[Claimed]:
    """One claim of up to count jobs, as a worker with that many free slots makes it."""
    return await claim(sessions, backend=backend, limit=limit, worker_id="wrk_unit", lease_seconds=60, count=count)


async def test_the_smallest_fair_tag_goes_first_then_the_oldest(sessions: async_sessionmaker[AsyncSession]) -> None:
    backlog = await add(sessions, job("a", 0), job("a", 1), job("a", 2))
    newcomer = await add(sessions, job("b", 0))
    order = [(await take(sessions)) for _ in range(4)]
    assert [c.job_id for c in order if c] == [backlog[0], newcomer[0], backlog[1], backlog[2]]
    assert await take(sessions) is None


async def test_a_claimed_job_runs_for_this_worker_on_its_first_attempt(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    (job_id,) = await add(sessions, job("a", 0))
    claimed = await take(sessions)
    assert claimed is not None
    assert (claimed.job_id, claimed.attempt, claimed.model) == (job_id, 1, "fake-model")
    async with sessions() as session:
        row = await session.scalar(select(Job).where(Job.id == job_id))
    assert row is not None
    assert (row.status, row.worker_id, row.attempts) == (JobStatus.RUNNING, "wrk_unit", 1)
    assert row.started_at is not None


async def test_no_claim_past_the_backends_limit(sessions: async_sessionmaker[AsyncSession]) -> None:
    await add(sessions, job("a", 0, status=JobStatus.RUNNING), job("b", 0))
    assert await take(sessions, limit=1) is None
    assert await take(sessions, limit=2) is not None


async def test_a_waiting_vision_request_holds_a_slot(sessions: async_sessionmaker[AsyncSession]) -> None:
    _vision, image = await add(sessions, job("a", 0, kind=JobKind.VISION), job("b", 0))
    assert await take(sessions, limit=1) is None  # the vision request is never claimed: it only holds the slot
    claimed = await take(sessions, limit=2)
    assert claimed is not None
    assert claimed.job_id == image


async def test_another_backends_jobs_are_neither_taken_nor_counted(sessions: async_sessionmaker[AsyncSession]) -> None:
    await add(sessions, job("a", 0, backend="other", status=JobStatus.RUNNING), job("a", 1, backend="other"))
    assert await take(sessions, limit=1) is None
    (mine,) = await add(sessions, job("b", 5))
    claimed = await take(sessions, limit=1)
    assert claimed is not None
    assert claimed.job_id == mine


async def test_a_claim_says_whether_more_of_its_backends_jobs_wait(sessions: async_sessionmaker[AsyncSession]) -> None:
    await add(sessions, job("a", 0), job("b", 0), job("c", 0, backend="other"))
    first, second = await take(sessions), await take(sessions)
    assert first is not None
    assert second is not None
    assert (first.more_queued, second.more_queued) == (True, False)  # the other backend's job does not count


async def test_a_claimed_edit_comes_with_its_input_rows(sessions: async_sessionmaker[AsyncSession]) -> None:
    edit = job("a", 0)
    edit.operation = "edit"
    edit.inputs = [
        JobInput(index=i, role=role, storage_key=f"inputs/{i}", width=8, height=8, format="png", bytes=9, sha256="0")
        for i, role in enumerate(["reference", "mask"])
    ]
    await add(sessions, edit)
    claimed = await take(sessions)
    assert claimed is not None
    assert claimed.job is not None
    assert [(item.role, item.storage_key) for item in claimed.job.inputs] == [
        ("reference", "inputs/0"),
        ("mask", "inputs/1"),
    ]
    assert (claimed.job.status, claimed.job.attempts, claimed.job.operation) == (JobStatus.RUNNING, 1, "edit")


async def test_the_claimed_job_and_its_finished_copy_are_built_without_change_tracking(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # Read, never flushed: built as the ORM loads a row, not with an attribute event per column on the event loop.
    edit = job("a", 0)
    edit.operation = "edit"
    reference = {"index": 0, "role": "reference", "storage_key": "inputs/0", "format": "png", "sha256": "0"}
    edit.inputs = [JobInput(**reference, width=8, height=8, bytes=9)]
    await add(sessions, edit)
    claimed = await take(sessions)
    assert claimed is not None
    assert claimed.job is not None
    stored = [StoredImage("out.png", "images/out.png", ImageInfo(8, 8, "png", 9, "1"))]
    finished_at = utcnow()
    done = succeeded_job(claimed.job, stored, "logs", {"seed": 1}, finished_at, 0.25)

    assert [inspect(item).modified for item in (claimed.job, *claimed.job.inputs, done, *done.images)] == [False] * 4
    assert (done.id, done.status, done.finished_at, done.image_count) == (
        claimed.job_id,
        JobStatus.SUCCEEDED,
        finished_at,
        1,
    )
    assert (done.logs, done.result, done.cost_usd, done.operation) == ("logs", {"seed": 1}, 0.25, "edit")
    assert [(image.index, image.name, image.sha256) for image in done.live_images] == [(0, "out.png", "1")]
    assert [item.storage_key for item in done.inputs] == ["inputs/0"]
    assert (claimed.job.status, claimed.job.images, len(claimed.job.inputs)) == (JobStatus.RUNNING, [], 1)


async def test_one_claim_takes_several_jobs_in_the_order_single_claims_would(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    backlog = await add(sessions, job("a", 0), job("a", 1), job("a", 2))
    newcomer = await add(sessions, job("b", 0))
    first = await take_many(sessions, 3)
    assert [c.job_id for c in first] == [backlog[0], newcomer[0], backlog[1]]
    assert [c.more_queued for c in first][-1] is True  # the last says the rest still wait
    rest = await take_many(sessions, 3)
    assert [c.job_id for c in rest] == [backlog[2]]
    assert rest[-1].more_queued is False
    assert await take_many(sessions, 3) == []


async def test_a_batch_claim_stays_within_the_backends_limit(sessions: async_sessionmaker[AsyncSession]) -> None:
    await add(sessions, job("a", 0, status=JobStatus.RUNNING), job("v", 0, kind=JobKind.VISION))
    await add(sessions, *(job("b", i) for i in range(5)))
    claimed = await take_many(sessions, 5, limit=4)  # one runs and a vision request holds a slot: two are free
    assert len(claimed) == 2
    assert claimed[-1].more_queued is True
    assert await take_many(sessions, 5, limit=4) == []  # the limit is reached: none, never a negative LIMIT's all
    async with sessions() as session:
        running = await session.scalar(select(func.count()).where(Job.status == JobStatus.RUNNING))
    assert running == 3
