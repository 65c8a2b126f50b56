"""Per-key limits: scopes, allowed models, a sliding-window rate limit, and the periods of image quotas.

Every count lives in the database, so the limits hold across several processes on one database. The quotas on a
key's jobs (images, concurrency) are counted from the job table, by jobs/quotas.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from imagegate.errors import InsufficientScope, ModelNotAllowed, RateLimited
from imagegate.keys.models import ApiKey, RateEvent

WINDOW = timedelta(minutes=1)


@dataclass(frozen=True)
class RateState:
    """Where a key stands in its rate window after this request."""

    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        """The x-ratelimit-* headers."""
        return {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(self.remaining),
            "x-ratelimit-reset": str(self.reset_seconds),
        }


def require_scope(key: ApiKey, scope: str) -> None:
    """InsufficientScope unless the key has the scope."""
    if scope not in key.scopes:
        raise InsufficientScope(
            f"API key {key.handle} lacks the '{scope}' scope (it has: {', '.join(key.scopes) or 'none'}).",
        )


def require_model(key: ApiKey, *, model: str, backend: str) -> None:
    """ModelNotAllowed unless the key may use the model (listed by model or by backend name)."""
    allowed = key.allowed_models
    if allowed is not None and model not in allowed and backend not in allowed:
        raise ModelNotAllowed(
            f"API key {key.handle} may not use model {model!r}; it may use: {', '.join(allowed) or 'no model'}.",
            param="model",
        )


def visible_models(key: ApiKey, routes: Mapping[str, str]) -> list[tuple[str, str]]:
    """The (model, backend) routes the key may use, by model name."""
    allowed = key.allowed_models
    return [(m, b) for m, b in sorted(routes.items()) if allowed is None or m in allowed or b in allowed]


async def lock_key(session: AsyncSession, key_id: int) -> None:
    """Serialise writers for one key: a row lock on PostgreSQL; SQLite's writer lock comes with the first write."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(ApiKey.id).where(ApiKey.id == key_id).with_for_update())


async def take_rate_token(*, session: AsyncSession, key: ApiKey, now: datetime) -> RateState | None:
    """Count this request in the key's one-minute sliding window; RateLimited when the window is full."""
    limit = key.rate_limit_per_minute
    if limit is None:
        return None
    await lock_key(session, key.id)
    start = now - WINDOW
    await session.execute(delete(RateEvent).where(RateEvent.key_id == key.id, RateEvent.at <= start))
    row = (
        await session.execute(
            select(func.count(), func.min(RateEvent.at)).where(RateEvent.key_id == key.id, RateEvent.at > start)
        )
    ).one()
    used, oldest = int(row[0]), row[1]
    if used >= limit:
        reset = seconds_until((oldest or now) + WINDOW, now)
        state = RateState(limit, 0, reset)
        raise RateLimited(
            f"API key {key.handle} may make {limit} requests per minute; retry in {reset} s.",
            headers={**state.headers(), "Retry-After": str(reset)},
        )
    session.add(RateEvent(key_id=key.id, at=now))
    return RateState(limit, limit - used - 1, seconds_until((oldest or now) + WINDOW, now))


def seconds_until(moment: datetime, now: datetime) -> int:
    """Whole seconds from now until the moment, at least 1 (for Retry-After and reset headers)."""
    return max(math.ceil((moment - now).total_seconds()), 1)


@dataclass(frozen=True)
class Periods:
    """The quota periods (UTC) containing a moment."""

    day_start: datetime
    next_day: datetime
    month_start: datetime
    next_month: datetime

    @classmethod
    def at(cls, now: datetime) -> Periods:
        """Today and this month, in UTC."""
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        month = day.replace(day=1)
        next_month = (
            month.replace(year=month.year + 1, month=1) if month.month == 12 else month.replace(month=month.month + 1)
        )
        return cls(day, day + timedelta(days=1), month, next_month)


async def requests_in_window(session: AsyncSession, key_id: int, now: datetime) -> int:
    """The key's requests counted in its current one-minute window."""
    count = await session.scalar(select(func.count()).where(RateEvent.key_id == key_id, RateEvent.at > now - WINDOW))
    return int(count or 0)
