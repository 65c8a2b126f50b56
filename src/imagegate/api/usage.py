"""GET /v1/usage: the calling key's own usage, limits and what is left."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request

from imagegate.db import utcnow
from imagegate.jobs import queries
from imagegate.keys import limits
from imagegate.keys.auth import CallerKey
from imagegate.keys.models import ApiKey

router = APIRouter(tags=["usage"])


def _period(used: int, quota: int | None, resets_at: datetime) -> dict[str, Any]:
    return {
        "images": used,
        "limit": quota,
        "remaining": None if quota is None else max(quota - used, 0),
        "resets_at": resets_at.isoformat(),
    }


@router.get("/v1/usage")
async def usage(request: Request, key: CallerKey) -> dict[str, Any]:
    """Images today and this month, the key's limits, and what is left of each."""
    now = utcnow()
    periods = limits.Periods.at(now)
    async with request.app.state.sessions() as session:
        today = await queries.images_used(session, key.id, periods.day_start)
        month = await queries.images_used(session, key.id, periods.month_start)
        active = await queries.active_jobs(session, key.id)
        in_window = await limits.requests_in_window(session, key.id, now)
    return {
        "object": "usage",
        "key": {"handle": key.handle, "name": key.name, "expires_at": _iso(key.expires_at)},
        "today": _period(today, key.daily_image_quota, periods.next_day),
        "month": _period(month, key.monthly_image_quota, periods.next_month),
        "requests_per_minute": _rate(key, in_window),
        "concurrent_jobs": {"active": active, "limit": key.max_concurrent_jobs},
        "allowed_models": key.allowed_models,
        "scopes": key.scopes,
    }


def _rate(key: ApiKey, in_window: int) -> dict[str, Any]:
    limit = key.rate_limit_per_minute
    return {"limit": limit, "used": in_window, "remaining": None if limit is None else max(limit - in_window, 0)}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
