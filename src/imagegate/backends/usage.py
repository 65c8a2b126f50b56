"""Per-resource statistics from backend_usage: requests, successes, failures and images per window."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.backends.base import UsageEvent
from imagegate.backends.models import BackendUsage

WINDOWS = {
    "5h": timedelta(hours=5),
    "24h": timedelta(hours=24),
    "48h": timedelta(hours=48),
    "30d": timedelta(days=30),
}


@dataclass
class WindowStats:
    """Counts in one window."""

    requests: int = 0
    successes: int = 0
    failures: int = 0
    images: int = 0


@dataclass
class SubjectStats:
    """One resource's counts per window."""

    subject: str
    windows: dict[str, WindowStats] = field(default_factory=dict)


async def record(
    sessions: async_sessionmaker[AsyncSession], *, backend: str, job_id: str, events: list[UsageEvent]
) -> None:
    """Store a job run's usage events."""
    if not events:
        return
    async with sessions() as session, session.begin():
        session.add_all(
            BackendUsage(backend=backend, subject=e.subject, outcome=e.outcome, images=e.images, at=e.at, job_id=job_id)
            for e in events
        )


async def stats(session: AsyncSession, *, backend: str, now: datetime) -> list[SubjectStats]:
    """Each subject's requests, successes, failures and images in the last 5 h, 24 h, 48 h and 30 days."""
    result: dict[str, SubjectStats] = {}
    for label, span in WINDOWS.items():
        rows = await session.execute(
            select(
                BackendUsage.subject,
                func.count(),
                func.sum(case((BackendUsage.outcome == "success", 1), else_=0)),
                func.sum(BackendUsage.images),
            )
            .where(BackendUsage.backend == backend, BackendUsage.at > now - span)
            .group_by(BackendUsage.subject)
        )
        for subject, requests, successes, images in rows.all():
            entry = result.setdefault(subject, SubjectStats(subject))
            entry.windows[label] = WindowStats(
                int(requests), int(successes or 0), int(requests) - int(successes or 0), int(images or 0)
            )
    for entry in result.values():
        for label in WINDOWS:
            entry.windows.setdefault(label, WindowStats())
    return sorted(result.values(), key=lambda s: s.subject)
