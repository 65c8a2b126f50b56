"""A regression guard on the synchronous path's cost: SQL statements and transactions per job, counted, not timed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import GENERATE, Harness, HarnessFactory

JOBS = 10
# What one synchronous demo job costs end to end, per job: the key (when its cached copy has aged out), the fair
# tags, the insert and the queue-size check; a look at the queue and the claim; the next look that finds it empty;
# the finish and its image row. The waiter answers with the finished job the scheduler hands it, reading nothing.
# PostgreSQL adds the submit and claim advisory locks, and the NOTIFYs of the queued and the finished job (the
# hand-offs to other processes, jobs/notify.py).
STATEMENTS_PER_JOB = {"sqlite": 9, "postgresql": 13}
TRANSACTIONS_PER_JOB = 6


@dataclass
class Counts:
    """Statements sent and transactions begun on an engine while counting."""

    statements: list[str]
    transactions: int = 0


@contextmanager
def counting(engine: AsyncEngine) -> Iterator[Counts]:
    """Count every statement and transaction the engine runs inside the block."""
    counts = Counts([])

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        counts.statements.append(" ".join(sql.split())[:80])

    def begin(_conn: Any) -> None:
        counts.transactions += 1

    event.listen(engine.sync_engine, "before_cursor_execute", statement)
    event.listen(engine.sync_engine, "begin", begin)
    try:
        yield counts
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", statement)
        event.remove(engine.sync_engine, "begin", begin)


async def _generate(harness: Harness, auth: dict[str, str], i: int) -> None:
    body = {"prompt": f"budget {i}", "model": "demo", "size": "64x64"}
    response = await harness.client.post(GENERATE, json=body, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"


async def _scheduler_idle(harness: Harness) -> None:
    """Until the scheduler has no job running and no claim in flight (its last look at the queue is counted)."""
    scheduler = harness.app.state.services.scheduler
    async with asyncio.timeout(30):
        while scheduler._running or scheduler._claims_in_flight:
            await asyncio.sleep(0.01)


async def test_a_synchronous_job_stays_within_its_sql_budget(harness_with: HarnessFactory) -> None:
    # Long polls and heartbeats: only the work a job causes is counted.
    async with harness_with(poll_interval_seconds=60, worker_heartbeat_seconds=60, worker_lease_seconds=180) as harness:
        auth = await harness.auth()
        await _generate(harness, auth, -1)  # the first request warms caches that later ones reuse
        await _scheduler_idle(harness)
        with counting(harness.app.state.services.engine) as counts:
            for i in range(JOBS):
                await _generate(harness, auth, i)
            await _scheduler_idle(harness)
        dialect = harness.app.state.services.engine.dialect.name
    assert len(counts.statements) / JOBS <= STATEMENTS_PER_JOB[dialect], "\n".join(counts.statements)
    assert counts.transactions / JOBS <= TRANSACTIONS_PER_JOB
