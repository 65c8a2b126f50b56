"""A regression guard on the synchronous path's cost: SQL statements, transactions and thread steps per job, counted,
not timed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import Connection, select
from sqlalchemy.ext.asyncio import AsyncEngine

from imagegate import onehop
from imagegate.jobs import idempotency, service
from imagegate.jobs.models import IdempotencyRecord, Job, JobImage, JobInput, JobStatus
from imagegate.jobs.requests import GenerationRequest
from imagegate.keys.service import KeyLimits
from imagegate.webhooks.models import WebhookDelivery
from tests.fakes.backends import tiny_png
from tests.helpers import GENERATE, Harness, HarnessFactory, counting, fake_backends, job_row, listening

JOBS = 10
T = TypeVar("T")
# What one synchronous demo job costs end to end, per job, at most: the key (when its cached copy has aged out); the
# insert (it computes the fair tag and counts the queue); the claim (it says whether others wait, so no look at the
# queue comes before or after it); the finish and its image row. The waiter answers with the finished job the
# scheduler hands it, reading nothing. PostgreSQL adds the submit and claim advisory locks; its NOTIFYs of the queued
# and the finished job (the hand-offs to other processes, jobs/notify.py) ride in the insert's and the finish's
# RETURNING. An edit adds its input row, written with the job and read in the claim's transaction.
STATEMENTS_PER_JOB = {"sqlite": 5, "postgresql": 7}
EDIT_STATEMENTS_PER_JOB = {"sqlite": 7, "postgresql": 9}
# Submit, claim, finish, and the key's read when its cached copy has aged out.
TRANSACTIONS_PER_JOB = 4
# asyncio.to_thread steps of a synchronous demo job: the demo's render, then the output's check and its write to local
# storage together (the database's own hand-offs are aiosqlite's and onehop's, counted as statements above).
THREAD_STEPS_PER_JOB = 2
# On a SQLite file only the key's read goes through aiosqlite (a thread hand-off per statement, BEGIN and COMMIT);
# the submit, the claim and the finish each run whole in onehop's writer thread, one hand-off a transaction.
THROUGH_AIOSQLITE = ("api_key",)
ORM_ROWS = (Job, JobInput, JobImage)


async def _native(harness: Harness, auth: dict[str, str], i: int) -> None:
    body = {"prompt": f"budget {i}", "model": "demo", "size": "64x64"}
    response = await harness.client.post(GENERATE, json=body, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"


async def _openai(harness: Harness, auth: dict[str, str], i: int) -> None:
    body = {"prompt": f"budget {i}", "model": "demo", "size": "64x64", "response_format": "b64_json"}
    response = await harness.client.post("/v1/images/generations", json=body, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["data"][0]["b64_json"]


async def _openai_edit(harness: Harness, auth: dict[str, str], i: int) -> None:
    files = {"image": ("in.png", tiny_png(), "image/png")}
    data = {"prompt": f"budget {i}", "model": "demo", "size": "64x64", "response_format": "url"}
    response = await harness.client.post("/v1/images/edits", data=data, files=files, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["data"][0]["url"]


Submit = Callable[[Harness, dict[str, str], int], Awaitable[None]]
SURFACES: dict[str, tuple[Submit, dict[str, int]]] = {
    "native": (_native, STATEMENTS_PER_JOB),
    "openai": (_openai, STATEMENTS_PER_JOB),
    "openai-edit": (_openai_edit, EDIT_STATEMENTS_PER_JOB),
}


@contextmanager
def built_through_the_orm() -> Iterator[list[str]]:
    """The job rows made through their class's __init__ (the ORM's instrumentation, its events) inside the block."""
    built: list[str] = []

    def init(target: object, _args: object, _kwargs: object) -> None:
        built.append(type(target).__name__)

    with listening(ORM_ROWS, init=init):
        yield built


async def _scheduler_idle(harness: Harness) -> None:
    """Until the scheduler has no job running and no claim in flight (its last look at the queue is counted)."""
    scheduler = harness.app.state.services.scheduler
    async with asyncio.timeout(30):
        while scheduler._running or scheduler._claims_in_flight:
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("surface", list(SURFACES))
async def test_a_synchronous_job_stays_within_its_sql_budget(harness_with: HarnessFactory, surface: str) -> None:
    submit, budget = SURFACES[surface]
    # Long polls and heartbeats: only the work a job causes is counted.
    async with harness_with(poll_interval_seconds=60, worker_heartbeat_seconds=60, worker_lease_seconds=180) as harness:
        auth = await harness.auth()
        await submit(harness, auth, -1)  # the first request warms caches that later ones reuse
        await _scheduler_idle(harness)
        with counting(harness.app.state.services.engine) as counts, built_through_the_orm() as built:
            for i in range(JOBS):
                await submit(harness, auth, i)
            await _scheduler_idle(harness)
        dialect = harness.app.state.services.engine.dialect.name
    assert len(counts.statements) / JOBS <= budget[dialect], "\n".join(counts.statements)
    assert counts.transactions / JOBS <= TRANSACTIONS_PER_JOB
    assert built == []  # the submitted, claimed and finished job are made without the ORM's events (db.detached)
    if len(onehop.sync_engines(harness.app.state.services.engine)) > 1:  # a SQLite file: onehop has its writer
        assert [sql for sql in counts.async_statements if not any(part in sql for part in THROUGH_AIOSQLITE)] == []
        assert counts.async_transactions <= len(counts.async_statements)


BURST = 8
# A burst queued at once is claimed in one transaction, as many jobs as there are free slots; each job then costs
# its finish and its image row. Per job at most: (one claim, maybe one more that finds nothing and a look at the queue,
# PostgreSQL's lock per claim, and 8 * 2) / 8; claiming one job per transaction would cost 3 (SQLite) and 4 per job.
BURST_STATEMENTS_PER_JOB = {"sqlite": 2.5, "postgresql": 2.75}
# The app's start-up sweeps (expired rows) and the webhook sender's look, which may fall in a short window.
HOUSEKEEPING = ("DELETE FROM ", "expires_at <=", "webhook_delivery")


async def test_a_burst_is_claimed_in_one_transaction(harness_with: HarnessFactory) -> None:
    overrides = {"poll_interval_seconds": 60, "worker_heartbeat_seconds": 60, "worker_lease_seconds": 180}
    async with harness_with(backends=fake_backends(concurrency=BURST), **overrides) as harness:
        services = harness.app.state.services
        await _scheduler_idle(harness)
        burst = [job_row(f"k{i}") for i in range(BURST)]
        for job in burst:
            job.width = job.height = 8
        async with services.sessions() as session, session.begin():
            session.add_all(burst)  # queued without a wake: the loop learns of them all at once
        with counting(services.engine) as counts:
            services.scheduler.wake("fake")
            await harness.fake.wait_started(BURST)
            await _scheduler_idle(harness)
        dialect = services.engine.dialect.name
        async with services.sessions() as session:
            rows = await session.execute(select(Job.status, Job.started_at).where(Job.id.in_([j.id for j in burst])))
            ended = rows.all()
    assert [status for status, _started in ended] == [JobStatus.SUCCEEDED] * BURST
    assert len({started for _status, started in ended}) == 1  # one claim statement started them all
    statements = [sql for sql in counts.statements if not any(part in sql for part in HOUSEKEEPING)]
    assert len(statements) / BURST <= BURST_STATEMENTS_PER_JOB[dialect], "\n".join(statements)


async def test_a_synchronous_demo_job_takes_two_thread_steps(
    harness_with: HarnessFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[str] = []
    to_thread = asyncio.to_thread

    async def counted(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        task = asyncio.current_task()
        if task is None or task.get_name() != "retention":  # the start-up sweep may still be listing storage
            steps.append(getattr(func, "__qualname__", repr(func)))
        return await to_thread(func, *args, **kwargs)

    async with harness_with(poll_interval_seconds=60, worker_heartbeat_seconds=60, worker_lease_seconds=180) as harness:
        auth = await harness.auth()
        await _native(harness, auth, -1)
        await _scheduler_idle(harness)
        monkeypatch.setattr(asyncio, "to_thread", counted)
        for i in range(JOBS):
            await _native(harness, auth, i)
        await _scheduler_idle(harness)
        monkeypatch.undo()
    assert len(steps) / JOBS <= THREAD_STEPS_PER_JOB, steps
    assert "render" in steps  # the count sees the backend's own steps


# Everything the submit's one transaction may hold, each once: the job's INSERT (which computes the fair tag and counts
# the queue), the key's four quotas, the Idempotency-Key tied to the job, the webhook's 'queued' event; PostgreSQL's
# submit lock before them.
FULL_SUBMIT = [
    "INSERT INTO job",
    "SELECT count",
    "SELECT coalesce",
    "SELECT coalesce",
    "SELECT sum",
    "UPDATE",
    "INSERT",
]


@contextmanager
def transactions(engine: AsyncEngine) -> Iterator[list[tuple[bool, list[str]]]]:
    """Each transaction the engine runs inside the block: whether it went through the async engine, its statements."""
    seen: list[tuple[bool, list[str]]] = []
    current: dict[int, list[str]] = {}

    def begin(conn: Connection) -> None:
        current[id(conn)] = []
        seen.append((conn.engine is engine.sync_engine, current[id(conn)]))

    def statement(conn: Connection, _cursor: object, sql: str, *_args: object) -> None:
        current.setdefault(id(conn), []).append(" ".join(sql.split()))

    with listening(onehop.sync_engines(engine), begin=begin, before_cursor_execute=statement):
        yield seen


async def test_a_submit_with_quotas_an_idempotency_key_and_a_webhook_is_one_transaction(
    harness_with: HarnessFactory,
) -> None:
    async with harness_with(webhook_allow_private=True, poll_interval_seconds=60) as harness:
        ctx = harness.app.state.services.jobs
        quotas = KeyLimits(
            max_concurrent_jobs=5, daily_image_quota=50, monthly_image_quota=500, monthly_budget_usd=10.0
        )
        key, _token = await harness.new_key(limits=quotas)
        await idempotency.begin(
            sessions=ctx.sessions, key=key, idempotency_key="once", fingerprint="f", ttl=timedelta(hours=1)
        )
        request = GenerationRequest(
            prompt="budget", model="demo", webhook_url="http://127.0.0.1:9/hook", webhook_events=["queued"]
        )
        with transactions(harness.app.state.services.engine) as seen:
            job = await service.submit(ctx=ctx, request=request, key=key, idempotency_key="once")
        dialect = harness.app.state.services.engine.dialect.name
        async with ctx.sessions() as session:
            tied = await session.scalar(select(IdempotencyRecord.job_id))
            event_queued = await session.scalar(select(WebhookDelivery.event).where(WebhookDelivery.job_id == job.id))
    # The app's start-up sweep and the claim loop's first look may fall in the window, in transactions of their own.
    submits = [(on_async, sql) for on_async, sql in seen if any(s.startswith("INSERT INTO job ") for s in sql)]
    expected = (["SELECT pg_advisory_xact_lock"] if dialect == "postgresql" else []) + FULL_SUBMIT
    assert len(submits) == 1, submits
    through_async, statements = submits[0]
    assert [next((p for p in expected if sql.startswith(p)), sql) for sql in statements] == expected, statements
    assert through_async == (dialect == "postgresql")  # on SQLite, whole in onehop's writer thread: not aiosqlite
    assert (tied, event_queued) == (job.id, "queued")
