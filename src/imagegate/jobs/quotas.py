"""A key's quotas on its jobs: how many may be unfinished at once, images per day and per month, dollars a month.

They are counted from the job table inside the submitting transaction, so they hold across processes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from imagegate.errors import QuotaExceeded, TooManyConcurrentJobs
from imagegate.jobs import queries, spend
from imagegate.keys.limits import Periods, seconds_until
from imagegate.keys.models import ApiKey

CONCURRENCY_RETRY_AFTER = "5"


async def check(*, session: AsyncSession, key: ApiKey, now: datetime) -> None:
    """After the new job is in the transaction: refuse it if the key is now over a quota."""
    await session.run_sync(lambda sync_session: check_now(sync_session.connection(), key=key, now=now))


def check_now(connection: Connection, *, key: ApiKey, now: datetime) -> None:
    """check in the connection's transaction (the submit's, in one hand-off); a key without quotas reads nothing."""
    if key.max_concurrent_jobs is not None:
        active = int(connection.scalar(queries.active_jobs_query(key.id)) or 0)
        if active > key.max_concurrent_jobs:
            raise TooManyConcurrentJobs(
                f"API key {key.handle} may have {key.max_concurrent_jobs} unfinished job(s) at once; "
                "wait for one to finish.",
                headers={"Retry-After": CONCURRENCY_RETRY_AFTER},
            )
    periods = Periods.at(now)
    for quota, since, resets, label in (
        (key.daily_image_quota, periods.day_start, periods.next_day, "daily"),
        (key.monthly_image_quota, periods.month_start, periods.next_month, "monthly"),
    ):
        if quota is None:
            continue
        used = int(connection.scalar(queries.images_used_query(key.id, since)) or 0)
        if used > quota:
            raise QuotaExceeded(
                f"API key {key.handle} has a {label} quota of {quota} images and this request would make it "
                f"{used}; it resets at {resets.isoformat()}.",
                headers={"Retry-After": str(seconds_until(resets, now))},
            )
    _check_budget(connection, key=key, periods=periods, now=now)


def _check_budget(connection: Connection, *, key: ApiKey, periods: Periods, now: datetime) -> None:
    """Refuse a key whose estimated spend this month has reached its budget: one aggregate of the priced jobs (the
    new job has cost nothing yet, so the one that crosses the budget still runs)."""
    if key.monthly_budget_usd is None:
        return
    spent = float(connection.scalar(spend.cost_since_query(key_id=key.id, since=periods.month_start)) or 0.0)
    if spent >= key.monthly_budget_usd:
        raise QuotaExceeded(
            f"API key {key.handle} has a monthly budget of ${key.monthly_budget_usd:,.2f} and has spent an "
            f"estimated ${spent:,.2f}; it resets at {periods.next_month.isoformat()}.",
            headers={"Retry-After": str(seconds_until(periods.next_month, now))},
        )
