"""Retention: expire finished jobs past their expires_at, and remove files no job references."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.admin.models import AdminSession
from imagegate.backends.registry import BackendSet
from imagegate.db import utcnow
from imagegate.errors import ImagegateError
from imagegate.jobs import queries
from imagegate.jobs.models import IdempotencyRecord, Job, JobImage, JobInput, JobStatus
from imagegate.keys.limits import WINDOW
from imagegate.keys.models import RateEvent
from imagegate.settings import Settings
from imagegate.storage import Storage
from imagegate.webhooks.models import DeliveryState, WebhookAttempt, WebhookDelivery

logger = logging.getLogger(__name__)

BATCH_SIZE = 500


@dataclass
class SweepReport:
    """What one sweep removed."""

    expired_jobs: int = 0
    deleted_files: int = 0
    orphan_files: int = 0
    backend_items: int = 0
    errors: list[str] = field(default_factory=list)


async def sweep(
    *,
    sessions: async_sessionmaker[AsyncSession],
    storage: Storage,
    settings: Settings,
    backends: BackendSet | None = None,
    now: datetime | None = None,
) -> SweepReport:
    """Expire every job due, batch after batch until none is left, remove orphan files and backends' leftovers."""
    now = now or utcnow()
    report = SweepReport()
    while await _expire_batch(sessions, storage, now, report):
        pass
    await _forget_old_bookkeeping(sessions, now)
    while await _forget_webhook_batch(sessions):
        pass
    await _remove_orphans(sessions, storage, now - timedelta(seconds=settings.orphan_grace_seconds), report)
    for name, backend in (backends.backends if backends else {}).items():
        try:
            report.backend_items += await backend.sweep()
        except Exception as exc:
            logger.exception("retention: backend %s could not sweep", name)
            report.errors.append(f"backend {name}: {exc}")
    return report


async def _expire_batch(
    sessions: async_sessionmaker[AsyncSession], storage: Storage, now: datetime, report: SweepReport
) -> bool:
    async with sessions() as session, session.begin():
        ids = await queries.expirable_job_ids(session, now, BATCH_SIZE)
        if not ids:
            return False
        keys = await queries.storage_keys_of(session, ids)
        await session.execute(delete(JobImage).where(JobImage.job_id.in_(ids)))
        await session.execute(delete(JobInput).where(JobInput.job_id.in_(ids)))
        await session.execute(update(Job).where(Job.id.in_(ids)).values(status=JobStatus.EXPIRED))
    report.expired_jobs += len(ids)
    # Files go after the commit: a crash in between leaves orphans, which the next sweep removes.
    report.deleted_files += await _delete(storage, keys, report)
    return True


async def _forget_old_bookkeeping(sessions: async_sessionmaker[AsyncSession], now: datetime) -> None:
    """Expired Idempotency-Keys, rate-limit events outside every window, and expired admin sessions (with any
    new key's secret still waiting in their one-time message)."""
    async with sessions() as session, session.begin():
        await session.execute(delete(AdminSession).where(AdminSession.expires_at <= now))
        await session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now))
        await session.execute(delete(RateEvent).where(RateEvent.at <= now - WINDOW))


async def _forget_webhook_batch(sessions: async_sessionmaker[AsyncSession]) -> bool:
    """Webhook deliveries (with their attempts) of expired jobs, once delivered or given up: a pending one
    keeps its retries however short the retention."""
    async with sessions() as session, session.begin():
        seqs = (
            await session.scalars(
                select(WebhookDelivery.seq)
                .join(Job, Job.id == WebhookDelivery.job_id)
                .where(WebhookDelivery.state != DeliveryState.PENDING, Job.status == JobStatus.EXPIRED)
                .limit(BATCH_SIZE)
            )
        ).all()
        if not seqs:
            return False
        await session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_seq.in_(seqs)))
        await session.execute(delete(WebhookDelivery).where(WebhookDelivery.seq.in_(seqs)))
    return True


async def _remove_orphans(
    sessions: async_sessionmaker[AsyncSession], storage: Storage, older_than: datetime, report: SweepReport
) -> None:
    """Files in images/ and inputs/ that no live job references, past a grace period for in-flight writes."""
    for prefix in ("images/", "inputs/"):
        batch: list[str] = []
        async for obj in storage.list(prefix):
            if obj.modified_at < older_than:
                batch.append(obj.key)
            if len(batch) >= BATCH_SIZE:
                await _remove_unreferenced(sessions, storage, batch, report)
                batch = []
        await _remove_unreferenced(sessions, storage, batch, report)


async def _remove_unreferenced(
    sessions: async_sessionmaker[AsyncSession], storage: Storage, keys: list[str], report: SweepReport
) -> None:
    if not keys:
        return
    async with sessions() as session:
        referenced = await queries.referenced_storage_keys(session, keys)
    report.orphan_files += await _delete(storage, [key for key in keys if key not in referenced], report)


async def _delete(storage: Storage, keys: list[str], report: SweepReport) -> int:
    """Remove the files in one batched call; how many went (none, with the error noted, when the store fails)."""
    try:
        return await storage.delete_many(keys)
    except (OSError, ImagegateError) as exc:
        report.errors.append(f"{len(keys)} file(s) starting with {keys[0]}: {getattr(exc, 'strerror', None) or exc}")
        return 0


async def run_periodically(
    *,
    sessions: async_sessionmaker[AsyncSession],
    storage: Storage,
    settings: Settings,
    backends: BackendSet,
    stop: asyncio.Event,
) -> None:
    """Sweep at start-up and then every cleanup interval, until stop is set (never cut off mid-transaction)."""
    while not stop.is_set():
        try:
            report = await sweep(sessions=sessions, storage=storage, settings=settings, backends=backends)
            if report.expired_jobs or report.orphan_files or report.backend_items:
                logger.info(
                    "retention: expired %d job(s), removed %d file(s), %d orphan(s) and %d backend item(s)",
                    report.expired_jobs,
                    report.deleted_files,
                    report.orphan_files,
                    report.backend_items,
                )
        except Exception:
            logger.exception("retention sweep failed; will retry at the next interval")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.cleanup_interval_seconds)
