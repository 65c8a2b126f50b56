"""What the admin pages show, each an indexed query (the history stays fast with a large job table)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from imagegate.errors import InvalidRequest
from imagegate.jobs import queries
from imagegate.jobs.models import Job, JobStatus
from imagegate.keys import limits
from imagegate.keys.models import ApiKey, AuditEvent

PAGE_SIZE = 50
CHART_DAYS = 14
RECENT_JOBS = 10


@dataclass
class Overview:
    """The overview page's numbers."""

    queued: int
    running: int
    finished_24h: int
    succeeded_24h: int
    images_24h: int
    per_day: list[tuple[date, int]]
    per_backend: dict[str, dict[JobStatus, int]]
    stored_bytes: int
    recent: list[Job]

    @property
    def success_rate(self) -> float | None:
        """Succeeded share of the jobs finished in the last 24 h."""
        return self.succeeded_24h / self.finished_24h if self.finished_24h else None


async def overview(session: AsyncSession, now: datetime) -> Overview:
    """Queue, last-24-hours, per-day, per-backend and storage figures."""
    per_backend = await queries.active_by_backend(session)
    day = await queries.created_since_by_status(session, now - timedelta(hours=24))
    finished = {s: v for s, v in day.items() if s in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.EXPIRED)}
    return Overview(
        queued=sum(b.get(JobStatus.QUEUED, 0) for b in per_backend.values()),
        running=sum(b.get(JobStatus.RUNNING, 0) for b in per_backend.values()),
        finished_24h=sum(c for c, _i in finished.values()),
        succeeded_24h=sum(c for s, (c, _i) in finished.items() if s != JobStatus.FAILED),
        images_24h=sum(int(i) for _c, i in finished.values()),
        per_day=await images_per_day(session, now),
        per_backend=per_backend,
        stored_bytes=await queries.stored_bytes(session),
        recent=await queries.recent_jobs(session, RECENT_JOBS),
    )


async def images_per_day(session: AsyncSession, now: datetime) -> list[tuple[date, int]]:
    """Images made per UTC day over the last 14 days, oldest first, days without images as 0."""
    first = (now - timedelta(days=CHART_DAYS - 1)).date()
    start = datetime(first.year, first.month, first.day, tzinfo=now.tzinfo)
    totals = {first + timedelta(days=i): 0 for i in range(CHART_DAYS)}
    for created, images in await queries.images_made_since(session, start):
        day = created.date()
        if day in totals:
            totals[day] += images
    return sorted(totals.items())


@dataclass
class HistoryFilter:
    """The history page's filters; empty strings mean 'any'."""

    key: str = ""
    status: str = ""
    model: str = ""
    backend: str = ""
    since: str = ""
    until: str = ""
    q: str = ""

    def as_query(self) -> dict[str, str]:
        """Only the filters that are set, for links."""
        return {k: v for k, v in self.__dict__.items() if v}


@dataclass
class HistoryPage:
    """One page of jobs, newest first, and the cursor of the next one."""

    jobs: list[Job]
    next_cursor: str | None
    filters: HistoryFilter = field(default_factory=HistoryFilter)


async def history(
    session: AsyncSession, filters: HistoryFilter, cursor: str | None, *, limit: int = PAGE_SIZE
) -> HistoryPage:
    """Filtered jobs, keyset-paginated on (created_at, seq) so no page scans what came before.

    An unknown cursor (its job deleted meanwhile, say) shows the first page.
    """
    statement = queries.every_job(await _conditions(session, filters))
    after = await queries.anchor_of(session, cursor) if cursor else None
    found = await queries.newest_first(session, statement, limit=limit, after=after)
    return HistoryPage(found.jobs, found.next_cursor, filters)


async def _conditions(session: AsyncSession, filters: HistoryFilter) -> list[Any]:
    conditions: list[Any] = []
    if filters.key:
        conditions.append(await _key_condition(session, filters.key))
    if filters.status:
        conditions.append(Job.status == filters.status)
    if filters.model:
        conditions.append(Job.model == filters.model)
    if filters.backend:
        conditions.append(Job.backend == filters.backend)
    if filters.since:
        conditions.append(Job.created_at >= _day(filters.since))
    if filters.until:
        until = _day(filters.until)
        if until.date() < date.max:  # the last representable day has no day after it: no upper bound
            conditions.append(Job.created_at < until + timedelta(days=1))
    if filters.q:
        conditions.append(Job.prompt.ilike(_contains(filters.q), escape="\\"))
    return conditions


async def _key_condition(session: AsyncSession, wanted: str) -> Any:
    """A key by its handle (also a deleted key's), else every key whose name contains the text."""
    key_id = await session.scalar(select(ApiKey.id).where(ApiKey.handle == wanted))
    if key_id is not None:
        return Job.key_id == key_id
    named = list(
        (await session.scalars(select(ApiKey.id).where(ApiKey.name.ilike(_contains(wanted), escape="\\")))).all()
    )
    if named:
        return Job.key_id.in_(named)
    return Job.key_handle == wanted


def _contains(text: str) -> str:
    """A LIKE pattern matching the text anywhere, its wildcards taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _day(value: str) -> datetime:
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{value!r} is not a date; use YYYY-MM-DD.") from None
    return datetime(parsed.year, parsed.month, parsed.day, tzinfo=UTC)


async def key_names(session: AsyncSession, handles: Iterable[str]) -> dict[str, str]:
    """The names of the keys with these handles (a deleted key's handle has none)."""
    wanted = sorted(set(handles))
    if not wanted:
        return {}
    rows = await session.execute(select(ApiKey.handle, ApiKey.name).where(ApiKey.handle.in_(wanted)))
    return {handle: name for handle, name in rows.all()}


@dataclass
class KeyUsage:
    """One key's use: images against its quotas, and its requests per day and status over 14 days."""

    images_today: int
    images_month: int
    per_day: list[tuple[date, dict[str, int]]]
    statuses: list[str]

    @property
    def total_requests(self) -> int:
        """Requests over the 14 days."""
        return sum(sum(counts.values()) for _day, counts in self.per_day)


async def key_usage(session: AsyncSession, key: ApiKey, now: datetime) -> KeyUsage:
    """Images today and this month as its quotas count them, and its requests by status per UTC day."""
    periods = limits.Periods.at(now)
    first = (now - timedelta(days=CHART_DAYS - 1)).date()
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    days: dict[date, dict[str, int]] = {first + timedelta(days=i): {} for i in range(CHART_DAYS)}
    for created, status in await queries.key_statuses_since(session, key.id, start):
        counts = days.get(created.date())
        if counts is not None:
            counts[status] = counts.get(status, 0) + 1
    seen = {status for counts in days.values() for status in counts}
    return KeyUsage(
        images_today=await queries.images_used(session, key.id, periods.day_start),
        images_month=await queries.images_used(session, key.id, periods.month_start),
        per_day=sorted(days.items(), reverse=True),
        statuses=[s.value for s in JobStatus if s.value in seen],
    )


@dataclass(frozen=True)
class AuditFilter:
    """The audit page's filters; empty strings mean 'any'."""

    action: str = ""
    actor: str = ""
    key: str = ""

    @property
    def any(self) -> bool:
        """Whether a filter is set."""
        return bool(self.action or self.actor or self.key)


async def audit_events(session: AsyncSession, filters: AuditFilter, *, limit: int) -> list[AuditEvent]:
    """The newest audit events matching the filters; a key by its handle or a part of its name."""
    statement = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)
    if filters.action:
        statement = statement.where(AuditEvent.action.startswith(filters.action, autoescape=True))
    if filters.actor:
        statement = statement.where(AuditEvent.actor == filters.actor)
    if filters.key:
        named = select(ApiKey.handle).where(ApiKey.name.ilike(_contains(filters.key), escape="\\"))
        statement = statement.where(or_(AuditEvent.key_handle == filters.key, AuditEvent.key_handle.in_(named)))
    return list((await session.scalars(statement)).all())


# Offered in the action filter (which matches by prefix, so 'key.' is every key change).
AUDIT_ACTIONS = (
    "admin.",
    "admin.login_failed",
    "admin.job_cancel",
    "admin.job_delete",
    "admin.cleanup",
    "key.",
    "key.create",
    "key.update",
    "key.rotate",
    "key.disable",
    "key.delete",
    "refused.",
)
