"""The queue's hot statements — the claim, the finish, the lease renewal — built once per dialect, values bound.

Bound names start with b_ (SQLAlchemy keeps column names for the SET clause's own values).

Each is executed on a connection (no Session, no unit of work), so a call builds nothing: the statement object and
its compiled form are reused, and only the bound values change. Times are the database's clock on PostgreSQL (hosts'
clocks may disagree) and bound values on SQLite (one host, no date arithmetic on our timestamps); clock_values()
gives every statement here what it may bind.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Exists,
    Float,
    Insert,
    Integer,
    Interval,
    String,
    Table,
    TextClause,
    Update,
    and_,
    bindparam,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    update,
)

from imagegate.db import UTCDateTime, utcnow
from imagegate.jobs import notify
from imagegate.jobs.models import ACTIVE, Job, JobImage, JobInput, JobKind, JobStatus, Worker

JOB, JOB_IMAGE, JOB_INPUT = (cast(Table, model.__table__) for model in (Job, JobImage, JobInput))
WORKER = cast(Table, Worker.__table__)
# Built once: an alias copies every column and foreign key, which per claim cost more than the claim itself.
QUEUED, RUNNING = JOB.alias("queued"), JOB.alias("running")
MORE_QUEUED = "more_queued"  # the claim's extra column: whether others still wait
IMAGE_INSERT: Insert = insert(JOB_IMAGE)
LOCK_CLAIMS: TextClause = text("SELECT pg_advisory_xact_lock(hashtext(:b_lock_name))")


def clock_values(lease_seconds: float = 0.0) -> dict[str, Any]:
    """The bound times: now and the lease's end for SQLite, the lease's length for PostgreSQL's own clock."""
    now, lease = utcnow(), timedelta(seconds=lease_seconds)
    return {"b_now": now, "b_lease_until": now + lease, "b_lease": lease}


def _now(dialect: str) -> ColumnElement[Any]:
    return func.now() if dialect == "postgresql" else bindparam("b_now", type_=UTCDateTime())


def _lease_until(dialect: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.now() + bindparam("b_lease", type_=Interval())
    return bindparam("b_lease_until", type_=UTCDateTime())


@functools.cache
def claim(dialect: str) -> Update:
    """Take up to :b_count of the fairest queued jobs of :b_backend, as many as keep its running jobs within :b_limit.

    They are leased to :b_worker_id; each row returned says whether a job of the backend waits after it in fair order.
    """
    backend = bindparam("b_backend", type_=String())
    # A vision request waiting for a slot holds it: it goes before every queued image job.
    taken = (
        select(func.count())
        .select_from(RUNNING)
        .where(
            RUNNING.c.backend == backend,
            or_(
                RUNNING.c.status == JobStatus.RUNNING,
                and_(RUNNING.c.status == JobStatus.QUEUED, RUNNING.c.kind == JobKind.VISION),
            ),
        )
        .scalar_subquery()
    )
    next_jobs = (
        select(QUEUED.c.seq)
        .where(QUEUED.c.status == JobStatus.QUEUED, QUEUED.c.backend == backend, QUEUED.c.kind == JobKind.IMAGE)
        .order_by(QUEUED.c.fair_tag, QUEUED.c.seq)
        .limit(_room(dialect, bindparam("b_limit", type_=Integer()) - taken))
        .with_for_update(skip_locked=True)
    )
    return (
        update(JOB)
        .where(JOB.c.seq.in_(next_jobs))
        .values(
            status=JobStatus.RUNNING,
            started_at=bindparam("b_now", type_=UTCDateTime()),
            attempts=JOB.c.attempts + 1,
            worker_id=bindparam("b_worker_id", type_=String()),
            lease_until=_lease_until(dialect),
            cancel_requested=False,
        )
        .returning(*JOB.columns, _queued_after(backend).label(MORE_QUEUED))
    )


def _room(dialect: str, free: ColumnElement[Any]) -> ColumnElement[Any]:
    """How many to take: :b_count, no more than the backend's free slots, never below none (SQLite reads -1 as all)."""
    count = bindparam("b_count", type_=Integer())
    if dialect == "postgresql":
        return func.greatest(func.least(count, free), 0)
    return func.max(func.min(count, free), 0)


def _queued_after(backend: ColumnElement[Any]) -> Exists:
    """Whether an image job of the backend waits after the claimed row in fair order (a RETURNING column).

    For the batch's last row in that order this is whether any job was left: none after it is in the batch, so the
    answer is the same whether the database evaluates it before the update (PostgreSQL) or row by row (SQLite).
    """
    # Spelled out: SQLite's RETURNING drops table names, which would make this compare the inner row to itself.
    tag: ColumnElement[Any] = literal_column("job.fair_tag")
    seq: ColumnElement[Any] = literal_column("job.seq")
    return (
        select(QUEUED.c.seq)
        .where(
            QUEUED.c.status == JobStatus.QUEUED,
            QUEUED.c.backend == backend,
            QUEUED.c.kind == JobKind.IMAGE,
            or_(QUEUED.c.fair_tag > tag, and_(QUEUED.c.fair_tag == tag, QUEUED.c.seq > seq)),
        )
        .exists()
    )


@functools.cache
def claimed_inputs() -> Any:
    """An edit's or variation's input rows, in order, for the job :b_job_id."""
    return (
        select(*JOB_INPUT.columns)
        .where(JOB_INPUT.c.job_id == bindparam("b_job_id", type_=String()))
        .order_by(JOB_INPUT.c.index)
    )


def _owned(*, by_worker: bool) -> ColumnElement[bool]:
    """Still the run's row: running, in attempt :b_attempt and (by_worker) on :b_worker_id, checked in the UPDATE."""
    owned = and_(
        JOB.c.id == bindparam("b_job_id", type_=String()),
        JOB.c.status == JobStatus.RUNNING,
        JOB.c.attempts == bindparam("b_attempt", type_=Integer()),
    )
    return and_(owned, JOB.c.worker_id == bindparam("b_worker_id", type_=String())) if by_worker else owned


@functools.cache
def finish_succeeded(dialect: str, *, by_worker: bool, with_result: bool) -> Update:
    """Mark the run's job succeeded (fenced); returns its webhook, and on PostgreSQL sends the NOTIFY of its end."""
    values: dict[str, Any] = {
        "status": JobStatus.SUCCEEDED,
        "finished_at": bindparam("b_finished_at", type_=UTCDateTime()),
        "image_count": bindparam("b_image_count", type_=Integer()),
        "logs": bindparam("b_logs", type_=JOB.c.logs.type),
        # Priced by the run as it finishes (None when unknown), so a budget check only sums a column.
        "cost_usd": bindparam("b_cost_usd", type_=Float()),
    }
    if with_result:
        values["result"] = bindparam("b_result", type_=JOB.c.result.type)
    return (
        update(JOB)
        .where(_owned(by_worker=by_worker))
        .values(**values)
        .returning(JOB.c.webhook, *_finished_notice(dialect))
    )


def _finished_notice(dialect: str) -> tuple[ColumnElement[Any], ...]:
    """The NOTIFY of the job's end as a RETURNING column (PostgreSQL only): sent on commit, when the row changed."""
    if dialect != "postgresql":
        return ()
    payload = bindparam("b_job_id", type_=String()) + literal(" ") + func.coalesce(JOB.c.worker_id, "")
    return (func.pg_notify(notify.FINISHED, payload).label("notified"),)


@functools.cache
def heartbeat(dialect: str) -> Update:
    """The worker :b_worker_id is alive now."""
    worker = WORKER.c.id == bindparam("b_worker_id", type_=String())
    return update(WORKER).where(worker).values(heartbeat_at=_now(dialect))


@functools.cache
def renew_leases(dialect: str) -> Update:
    """Extend the lease of every active job of :b_worker_id; returns the rows it renewed."""
    return (
        update(JOB)
        .where(JOB.c.worker_id == bindparam("b_worker_id", type_=String()), JOB.c.status.in_(ACTIVE))
        .values(lease_until=_lease_until(dialect))
        .returning(JOB.c.id, JOB.c.attempts, JOB.c.cancel_requested)
    )


@functools.cache
def any_queued() -> Any:
    """Whether an image job waits for :b_backend: a read, so an idle claim loop never takes the write lock."""
    return (
        select(JOB.c.seq)
        .where(
            JOB.c.status == JobStatus.QUEUED,
            JOB.c.backend == bindparam("b_backend", type_=String()),
            JOB.c.kind == JobKind.IMAGE,
        )
        .limit(1)
    )
