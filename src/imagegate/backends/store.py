"""BackendStore: a backend's own corner of the database, handed to it by the app (see Backend.start)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.backends import usage
from imagegate.backends.models import BackendEvent, BackendState
from imagegate.db import utcnow


class BackendStore:
    """Named values and events of one backend, shared by every process on the database."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], backend: str) -> None:
        self.sessions = sessions
        self.backend = backend

    async def get(self, key: str) -> Any:
        """The value stored under key, or None."""
        async with self.sessions() as session:
            row = await session.get(BackendState, (self.backend, key))
            return None if row is None else row.value

    async def values(self, prefix: str = "") -> dict[str, Any]:
        """Every stored value whose key starts with prefix."""
        async with self.sessions() as session:
            rows = await session.scalars(
                select(BackendState).where(BackendState.backend == self.backend, BackendState.key.startswith(prefix))
            )
            return {row.key: row.value for row in rows}

    async def put(self, key: str, value: Any) -> None:
        """Store value under key (JSON), replacing what was there."""
        async with self.sessions() as session, session.begin():
            row = await session.get(BackendState, (self.backend, key))
            if row is None:
                session.add(BackendState(backend=self.backend, key=key, value=value, updated_at=utcnow()))
            else:
                row.value, row.updated_at = value, utcnow()

    async def remove(self, key: str) -> None:
        """Forget the value under key."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                delete(BackendState).where(BackendState.backend == self.backend, BackendState.key == key)
            )

    async def add_event(
        self,
        kind: str,
        *,
        subject: str = "",
        key: str | None = None,
        data: dict[str, Any] | None = None,
        job_id: str | None = None,
    ) -> None:
        """Remember one event."""
        async with self.sessions() as session, session.begin():
            session.add(
                BackendEvent(
                    backend=self.backend,
                    kind=kind,
                    subject=subject,
                    key=key,
                    data=data or {},
                    job_id=job_id,
                    at=utcnow(),
                )
            )

    async def events(self, kind: str, *, limit: int = 100) -> list[BackendEvent]:
        """The newest events of a kind, newest first."""
        async with self.sessions() as session:
            rows = await session.scalars(
                select(BackendEvent)
                .where(BackendEvent.backend == self.backend, BackendEvent.kind == kind)
                .order_by(BackendEvent.at.desc(), BackendEvent.id.desc())
                .limit(limit)
            )
            return list(rows)

    async def has_event(self, kind: str, key: str) -> bool:
        """True when an event of this kind was stored with this key."""
        async with self.sessions() as session:
            found = await session.scalar(
                select(func.count())
                .select_from(BackendEvent)
                .where(BackendEvent.backend == self.backend, BackendEvent.kind == kind, BackendEvent.key == key)
            )
            return bool(found)

    async def prune(self, kind: str, *, before: datetime) -> int:
        """Drop events of a kind older than before; returns how many."""
        async with self.sessions() as session, session.begin():
            result = await session.execute(
                delete(BackendEvent).where(
                    BackendEvent.backend == self.backend, BackendEvent.kind == kind, BackendEvent.at < before
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)

    async def usage(self, *, now: datetime) -> list[usage.SubjectStats]:
        """Per-resource statistics of this backend (what JobReporter.usage recorded), per window."""
        async with self.sessions() as session:
            return await usage.stats(session, backend=self.backend, now=now)
