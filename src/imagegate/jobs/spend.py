"""Estimated spend: a job's reported token usage priced by the settings' price table at its finish (job.cost_usd),
summed per key and day in SQL."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from imagegate.jobs.models import Job
from imagegate.settings import ModelPrice

PER_TOKENS = 1_000_000


def _tokens(usage: Mapping[str, Any], *path: str) -> int:
    value: Any = usage
    for part in path:
        value = value.get(part) if isinstance(value, Mapping) else None
    return value if isinstance(value, int) and value > 0 else 0


def estimate(usage: Mapping[str, Any], price: ModelPrice) -> float:
    """Dollars for one OpenAI-shaped usage report (input text and image tokens, output image tokens)."""
    text_in = _tokens(usage, "input_tokens_details", "text_tokens")
    image_in = _tokens(usage, "input_tokens_details", "image_tokens")
    if not text_in and not image_in:
        # A report without the details counts every input token as text, the cheaper guess.
        text_in = _tokens(usage, "input_tokens")
    dollars = (
        text_in * price.input_text + image_in * price.input_image + _tokens(usage, "output_tokens") * price.output_image
    )
    return dollars / PER_TOKENS


def usage_of(result: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The token usage a backend reported in a job's result, if any."""
    usage = result.get("usage") if result else None
    return usage if isinstance(usage, Mapping) and usage else None


def cost(model: str, result: Mapping[str, Any] | None, prices: Mapping[str, ModelPrice]) -> float | None:
    """A job's estimated cost in dollars; None when its backend reported no usage or the model has no price."""
    usage = usage_of(result)
    price = prices.get(model)
    if usage is None or price is None:
        return None
    return estimate(usage, price)


async def cost_per_day(
    session: AsyncSession, *, now: datetime, days: int, key_id: int | None = None
) -> list[tuple[date, float]]:
    """Estimated dollars per UTC day over the last `days` days (newest first), of every key or one: summed in SQL."""
    first = (now - timedelta(days=days - 1)).date()
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    day = _utc_day(session)
    statement = (
        select(day, func.sum(Job.cost_usd)).where(Job.created_at >= start, Job.cost_usd.is_not(None)).group_by(day)
    )
    if key_id is not None:
        statement = statement.where(Job.key_id == key_id)
    totals = {first + timedelta(days=i): 0.0 for i in range(days)}
    for when, dollars in (await session.execute(statement)).all():
        shown = when if isinstance(when, date) else date.fromisoformat(when)
        if shown in totals:
            totals[shown] += float(dollars)
    return sorted(totals.items(), reverse=True)


def _utc_day(session: AsyncSession) -> ColumnElement[Any]:
    """A job's UTC creation day: PostgreSQL keeps the zone; SQLite stores UTC without one ('YYYY-MM-DD …')."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone("UTC", Job.created_at))
    return func.date(Job.created_at)


async def cost_since(session: AsyncSession, *, since: datetime, key_id: int) -> float:
    """A key's estimated dollars since a moment (the start of its budget's month)."""
    return await known_cost_since(session, since=since, key_id=key_id) or 0.0


async def known_cost_since(session: AsyncSession, *, since: datetime, key_id: int) -> float | None:
    """A key's estimated dollars since a moment, in one aggregate on the (key_id, created_at) index; None when none
    of its jobs since then could be priced (unknown, not 0)."""
    total = await session.scalar(cost_since_query(key_id=key_id, since=since))
    return None if total is None else float(total)


def cost_since_query(*, key_id: int, since: datetime) -> Select[float | None]:
    """The statement of known_cost_since, also run on a connection by the submit's budget check."""
    return select(func.sum(Job.cost_usd)).where(Job.key_id == key_id, Job.created_at >= since)
