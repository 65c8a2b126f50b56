"""The audit log: key changes and refusals for limits, with actor and handle; never a raw key."""

from __future__ import annotations

import logging
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.db import utcnow
from imagegate.errors import Refusal
from imagegate.keys.models import AuditEvent

Actor = Literal["cli", "admin", "api"]
logger = logging.getLogger(__name__)


def record(*, session: AsyncSession, actor: Actor, action: str, handle: str | None, **detail: Any) -> None:
    """Add an audit event to the session's transaction."""
    session.add(AuditEvent(at=utcnow(), actor=actor, action=action, key_handle=handle, detail=detail))


async def record_refusal(
    *, sessions: async_sessionmaker[AsyncSession], handle: str, refusal: Refusal, **detail: Any
) -> None:
    """Record that the API refused a key for its limits (in a transaction of its own)."""
    try:
        async with sessions() as session, session.begin():
            record(
                session=session,
                actor="api",
                action=f"refused.{refusal.code}",
                handle=handle,
                message=refusal.message,
                **detail,
            )
    except Exception:  # the refusal itself must still reach the caller
        logger.exception("could not record a refusal for %s in the audit log", handle)


async def events(
    *, session: AsyncSession, handle: str | None = None, action: str | None = None, limit: int = 50
) -> list[AuditEvent]:
    """The newest audit events, optionally for one handle or one action (prefix)."""
    statement = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)
    if handle:
        statement = statement.where(AuditEvent.key_handle == handle)
    if action:
        statement = statement.where(AuditEvent.action.startswith(action))
    return list((await session.scalars(statement)).all())
