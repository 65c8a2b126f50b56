"""Workers and their leases: a running job is its worker's while the worker renews the job's lease.

Every lease is set and judged by the database's clock (PostgreSQL's, when hosts may disagree), and a lapsed
lease is taken by one fenced UPDATE that re-checks the lapse: a renewal and a take-over cannot both win.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, and_, delete, exists, not_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate import onehop
from imagegate.db import db_time, engine_of, utcnow
from imagegate.errors import JobInterrupted
from imagegate.hosts import host_identity, pid_alive
from imagegate.jobs import queue, statements
from imagegate.jobs.models import Job, JobKind, JobStatus, Worker
from imagegate.jobs.queue import Claimed

# A vision request of a process without a worker id (no scheduler) counts as abandoned only after this long.
UNOWNED_VISION_STALE = timedelta(hours=1)


async def register_worker(sessions: async_sessionmaker[AsyncSession], worker_id: str) -> None:
    """Announce this process as a worker."""
    async with sessions() as session, session.begin():
        session.add(Worker(id=worker_id, hostname=host_identity(), pid=os.getpid(), heartbeat_at=db_time(session)))


@dataclass(frozen=True)
class Renewal:
    """What a renewal learnt about the runs this worker holds."""

    lost: list[str]  # no longer this worker's (taken over, settled or gone): their copies here must stop
    cancel: list[str]  # still this worker's, and a caller asked to stop them


async def renew(
    sessions: async_sessionmaker[AsyncSession], worker_id: str, *, lease_seconds: float, runs: Mapping[str, int]
) -> Renewal:
    """Extend the lease of every job this worker holds and say which of its runs (job id → attempt) it lost.

    One transaction of two prebuilt statements: the heartbeat, and the renewal, which returns the rows it renewed.
    A run whose row it did not renew, in that attempt, is held by no one here any more.
    """
    params = {"b_worker_id": worker_id, **statements.clock_values(lease_seconds)}

    def renew_all(connection: Connection) -> Sequence[Row[Any]]:
        dialect = connection.dialect.name
        connection.execute(statements.heartbeat(dialect), params)
        return connection.execute(statements.renew_leases(dialect), params).all()

    renewed = await onehop.transaction(engine_of(sessions), renew_all)
    held = {(row.id, row.attempts): row.cancel_requested for row in renewed}
    lost = [job_id for job_id, attempt in runs.items() if (job_id, attempt) not in held]
    cancel = [job_id for job_id, attempt in runs.items() if held.get((job_id, attempt))]
    return Renewal(lost, cancel)


async def unregister_worker(sessions: async_sessionmaker[AsyncSession], worker_id: str) -> None:
    """Remove this worker's row on a clean shutdown."""
    async with sessions() as session, session.begin():
        await session.execute(delete(Worker).where(Worker.id == worker_id))


@dataclass(frozen=True)
class Survey:
    """The worker table as one worker sees it at a heartbeat."""

    live: int  # workers that renewed within a lease, this one included: they share each backend's limit
    gone: frozenset[str]  # on this host with their process gone (or this process's before a restart): dead now
    forgotten: frozenset[str]  # gone, or silent for ten leases: their rows can go


async def survey(sessions: async_sessionmaker[AsyncSession], *, me: str, lease_seconds: float) -> Survey:
    """Read every worker row once, judged by the database's clock."""
    host, pid = host_identity(), os.getpid()
    async with sessions() as session:
        rows = (
            await session.execute(
                select(
                    Worker.id,
                    Worker.hostname,
                    Worker.pid,
                    (Worker.heartbeat_at >= db_time(session, -lease_seconds)).label("live"),
                    (Worker.heartbeat_at < db_time(session, -lease_seconds * 10)).label("silent"),
                )
            )
        ).all()
    others = [row for row in rows if row.id != me]
    gone = {row.id for row in others if row.hostname == host and (row.pid == pid or not pid_alive(row.pid))}
    live = sum(1 for row in others if row.live and row.id not in gone) + 1
    forgotten = gone | {row.id for row in others if row.silent}
    return Survey(live, frozenset(gone), frozenset(forgotten))


def slots_for(limit: int, *, workers: int, configured: int | None) -> int:
    """This process's share of a backend's limit: the configured count or the limit over live workers (≥ 1)."""
    if configured is not None:
        return min(configured, limit)
    return max(math.ceil(limit / max(workers, 1)), 1)


def _lapsed(session: AsyncSession, *, lease_seconds: float) -> ColumnElement[bool]:
    """A row whose lease ran out; a row without one (older than leases) goes by its worker's heartbeat."""
    now = db_time(session)
    renewed = exists().where(Worker.id == Job.worker_id, Worker.heartbeat_at >= db_time(session, -lease_seconds))
    return or_(Job.lease_until < now, and_(Job.lease_until.is_(None), not_(renewed)))


async def recover_interrupted(
    sessions: async_sessionmaker[AsyncSession], *, me: str, lease_seconds: float, retry: bool, workers: Survey
) -> list[str]:
    """Settle other workers' jobs whose lease lapsed or whose process is gone; returns their ids."""
    gone = workers.gone
    async with sessions() as session:
        unowned_vision = and_(
            Job.kind == JobKind.VISION, Job.worker_id.is_(None), Job.created_at > utcnow() - UNOWNED_VISION_STALE
        )
        rows = (
            await session.execute(
                select(Job.id, Job.attempts, Job.kind, Job.status, Job.worker_id).where(
                    or_(
                        Job.status == JobStatus.RUNNING,
                        and_(Job.status == JobStatus.QUEUED, Job.kind == JobKind.VISION),
                    ),
                    or_(Job.worker_id.is_(None), Job.worker_id != me),
                    not_(unowned_vision),
                    or_(
                        Job.worker_id.is_(None), Job.worker_id.in_(gone), _lapsed(session, lease_seconds=lease_seconds)
                    ),
                )
            )
        ).all()
    settled = []
    for row in rows:
        if await _take(sessions, row, gone=row.worker_id in gone, lease_seconds=lease_seconds, retry=retry):
            settled.append(row.id)
    if workers.forgotten:
        async with sessions() as session, session.begin():
            await session.execute(delete(Worker).where(Worker.id.in_(workers.forgotten)))
    return settled


async def _take(
    sessions: async_sessionmaker[AsyncSession], row: Any, *, gone: bool, lease_seconds: float, retry: bool
) -> bool:
    """Settle one row if it is still as it was read and, unless its process is gone, its lease still lapsed."""

    def still_lapsed(session: AsyncSession) -> ColumnElement[bool]:
        same_owner = Job.worker_id.is_(None) if row.worker_id is None else Job.worker_id == row.worker_id
        if gone or row.worker_id is None:
            return same_owner
        return and_(same_owner, _lapsed(session, lease_seconds=lease_seconds))

    if row.kind == JobKind.VISION:
        # It was answered on its HTTP connection, which died with the process: never run it again.
        return await _fail_vision(sessions, row.id, row.status, still_lapsed)
    status = await queue.settle_interrupted(
        sessions, Claimed(row.id, row.attempts), None, retry=retry, only_if=still_lapsed
    )
    return status is not None


async def _fail_vision(sessions: async_sessionmaker[AsyncSession], job_id: str, status: str, only_if: Any) -> bool:
    error = JobInterrupted("The vision request was interrupted by a restart of the service; send it again.")
    async with sessions() as session, session.begin():
        result = await session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == status, only_if(session))
            .values(
                status=JobStatus.FAILED,
                finished_at=utcnow(),
                error_code=error.code,
                error_message=error.message,
                error_status=error.status,
            )
            .execution_options(synchronize_session=False)
        )
    return bool(getattr(result, "rowcount", 0))
