"""GET /v1/usage: the calling key's own usage, limits and what is left."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter

from imagegate.db import utcnow
from imagegate.jobs import queries, spend
from imagegate.keys import limits
from imagegate.keys.auth import CallerKey
from imagegate.keys.models import ApiKey
from imagegate.services import AppServices

router = APIRouter(tags=["usage"])


def _period(used: int, quota: int | None, resets_at: datetime) -> dict[str, Any]:
    return {
        "images": used,
        "limit": quota,
        "remaining": None if quota is None else max(quota - used, 0),
        "resets_at": resets_at.isoformat(),
    }


@router.get("/v1/usage")
async def usage(key: CallerKey, svc: AppServices) -> dict[str, Any]:
    """Images today and this month, the key's limits, this month's estimated spend, and what is left of each."""
    now = utcnow()
    periods = limits.Periods.at(now)
    async with svc.sessions() as session:
        today = await queries.images_used(session, key.id, periods.day_start)
        month = await queries.images_used(session, key.id, periods.month_start)
        active = await queries.active_jobs(session, key.id)
        in_window = await limits.requests_in_window(session, key.id, now)
        spent = await spend.known_cost_since(session, since=periods.month_start, key_id=key.id)
    return {
        "object": "usage",
        "key": {"handle": key.handle, "name": key.name, "expires_at": _iso(key.expires_at)},
        "today": _period(today, key.daily_image_quota, periods.next_day),
        "month": _period(month, key.monthly_image_quota, periods.next_month),
        "requests_per_minute": _rate(key, in_window),
        "concurrent_jobs": {"active": active, "limit": key.max_concurrent_jobs},
        "spend": _spend(key, spent, periods.next_month),
        "allowed_models": key.allowed_models,
        "scopes": key.scopes,
    }


def _spend(key: ApiKey, spent: float | None, resets_at: datetime) -> dict[str, Any]:
    """This month's estimated spend against the key's monthly budget (either may be unknown: null)."""
    budget = key.monthly_budget_usd
    return {
        "estimated_usd": None if spent is None else round(spent, 6),
        "budget_usd": budget,
        "remaining_usd": None if budget is None else round(max(budget - (spent or 0.0), 0.0), 6),
        "resets_at": resets_at.isoformat(),
    }


def _rate(key: ApiKey, in_window: int) -> dict[str, Any]:
    limit = key.rate_limit_per_minute
    return {"limit": limit, "used": in_window, "remaining": None if limit is None else max(limit - in_window, 0)}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
