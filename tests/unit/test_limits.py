"""A key's limits called directly: scopes, models, the rate window, concurrency, quotas and budget (jobs/quotas)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.errors import InsufficientScope, ModelNotAllowed, QuotaExceeded, RateLimited, TooManyConcurrentJobs
from imagegate.jobs import quotas, spend
from imagegate.jobs.models import Job, JobStatus
from imagegate.keys import limits
from imagegate.keys.models import ApiKey
from imagegate.keys.service import KeyLimits, create_key, parse_budget
from imagegate.settings import ModelPrice
from tests.helpers import job_row as job

NOW = datetime(2026, 3, 31, 23, 59, 30, tzinfo=UTC)


def test_a_missing_scope_names_the_ones_the_key_has() -> None:
    key = ApiKey(handle="key_unit", scopes=["images:read"])
    with pytest.raises(InsufficientScope) as caught:
        limits.require_scope(key, "images:write")
    assert "lacks the 'images:write' scope (it has: images:read)" in caught.value.message


def test_a_model_is_allowed_by_its_name_or_its_backend() -> None:
    key = ApiKey(handle="key_unit", allowed_models=["demo", "fake"])
    limits.require_model(key, model="demo", backend="demo")
    limits.require_model(key, model="fake-model", backend="fake")
    with pytest.raises(ModelNotAllowed) as caught:
        limits.require_model(key, model="gpt-image-1", backend="openai")
    assert caught.value.param == "model"
    assert "may not use model 'gpt-image-1'; it may use: demo, fake." in caught.value.message


def test_quota_periods_are_utc_days_and_months() -> None:
    periods = limits.Periods.at(NOW)
    assert periods.day_start == datetime(2026, 3, 31, tzinfo=UTC)
    assert periods.next_day == datetime(2026, 4, 1, tzinfo=UTC)
    assert (periods.month_start, periods.next_month) == (
        datetime(2026, 3, 1, tzinfo=UTC),
        datetime(2026, 4, 1, tzinfo=UTC),
    )
    assert limits.Periods.at(datetime(2026, 12, 5, tzinfo=UTC)).next_month == datetime(2027, 1, 1, tzinfo=UTC)


async def new_key(sessions: async_sessionmaker[AsyncSession], **given: float) -> ApiKey:
    """A stored key with these limits."""
    async with sessions() as session, session.begin():
        key, _token = await create_key(session=session, name="unit", limits=KeyLimits(**given))  # type: ignore[arg-type]
    return key


async def test_the_rate_window_refuses_the_request_past_the_limit(sessions: async_sessionmaker[AsyncSession]) -> None:
    key = await new_key(sessions, rate_limit_per_minute=2)
    remaining = []
    for second in range(2):
        async with sessions() as session, session.begin():
            state = await limits.take_rate_token(session=session, key=key, now=NOW + timedelta(seconds=second))
            assert state is not None
            remaining.append(state.remaining)
    assert remaining == [1, 0]
    async with sessions() as session, session.begin():
        with pytest.raises(RateLimited) as caught:
            await limits.take_rate_token(session=session, key=key, now=NOW + timedelta(seconds=10))
    assert caught.value.headers["Retry-After"] == "50"  # the oldest request leaves the window then
    async with sessions() as session, session.begin():
        assert await limits.take_rate_token(session=session, key=key, now=NOW + timedelta(seconds=61)) is not None


async def test_a_job_past_the_concurrency_limit_is_refused(sessions: async_sessionmaker[AsyncSession]) -> None:
    key = await new_key(sessions, max_concurrent_jobs=1)
    async with sessions() as session, session.begin():
        session.add(owned(job("unit", 0, status=JobStatus.RUNNING), key))
        await session.flush()
        await quotas.check(session=session, key=key, now=NOW)
        session.add(owned(job("unit", 1), key))
        await session.flush()
        with pytest.raises(TooManyConcurrentJobs):
            await quotas.check(session=session, key=key, now=NOW)


async def test_a_daily_quota_counts_reserved_and_delivered_images(sessions: async_sessionmaker[AsyncSession]) -> None:
    key = await new_key(sessions, daily_image_quota=3)
    delivered = owned(job("unit", 0, status=JobStatus.SUCCEEDED), key, count=4, image_count=2)
    failed = owned(job("unit", 0, status=JobStatus.FAILED), key, count=4)
    async with sessions() as session, session.begin():
        session.add_all([delivered, failed, owned(job("unit", 1), key, count=1)])
        await session.flush()
        await quotas.check(session=session, key=key, now=NOW)  # 2 delivered + 1 reserved: at the quota
        session.add(owned(job("unit", 2), key, count=1))
        await session.flush()
        with pytest.raises(QuotaExceeded) as caught:
            await quotas.check(session=session, key=key, now=NOW)
    assert "daily quota of 3 images and this request would make it 4" in caught.value.message
    assert caught.value.headers["Retry-After"] == "30"  # midnight UTC


def owned(row: Job, key: ApiKey, *, count: int = 1, image_count: int = 0) -> Job:
    """The job row as the key's, created now."""
    row.key_id, row.count, row.image_count, row.created_at = key.id, count, image_count, NOW
    return row


PRICES = {"fake-model": ModelPrice(output_image=40.0)}


def spent(row: Job, output_tokens: int) -> Job:
    """The job with the token usage its backend reported, priced as its finish prices it."""
    row.result = {"usage": {"input_tokens": 0, "output_tokens": output_tokens}}
    row.cost_usd = spend.cost(row.model, row.result, PRICES)
    return row


async def test_a_monthly_budget_refuses_once_the_estimated_spend_reaches_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    key = await new_key(sessions, monthly_budget_usd=1.0)
    async with sessions() as session, session.begin():
        # 20,000 output image tokens at $40 per million: $0.80, under the budget.
        session.add(spent(owned(job("unit", 0, status=JobStatus.SUCCEEDED), key, image_count=1), 20_000))
        await session.flush()
        await quotas.check(session=session, key=key, now=NOW)
        session.add(spent(owned(job("unit", 1, status=JobStatus.SUCCEEDED), key, image_count=1), 5_000))
        await session.flush()
        with pytest.raises(QuotaExceeded) as caught:
            await quotas.check(session=session, key=key, now=NOW)
    assert "monthly budget of $1.00 and has spent an estimated $1.00" in caught.value.message
    assert caught.value.status == 429
    assert caught.value.headers["Retry-After"] == "30"  # the first of the next month, UTC


def test_a_budget_is_dollars_above_zero() -> None:
    assert [parse_budget(v) for v in ("12", "12.50", "$3", ".5")] == [12.0, 12.5, 3.0, 0.5]
    assert [parse_budget(v) for v in ("0", "-1", "1e3", "ten", ".", "", "2000000000")] == [None] * 7
