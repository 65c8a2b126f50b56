"""Idempotency-Key: the same key and body from the same API key names one job, never two."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.db import utcnow
from imagegate.errors import IdempotencyInProgress, IdempotencyKeyReused, InvalidRequest
from imagegate.jobs.models import IdempotencyRecord
from imagegate.keys.models import ApiKey

MAX_KEY_LENGTH = 255
# A record still without a job after this long belongs to a process that died while accepting.
ABANDONED_AFTER = timedelta(minutes=5)


def request_hash(surface: str, body: Any) -> str:
    """A fingerprint of a request: its surface and its body as canonical JSON."""
    canonical = json.dumps([surface, body], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(value: str) -> str:
    """The header's value, or InvalidRequest when it is empty or too long."""
    value = value.strip()
    if not value or len(value) > MAX_KEY_LENGTH:
        raise InvalidRequest(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.", param="Idempotency-Key")
    return value


async def begin(
    *, sessions: async_sessionmaker[AsyncSession], key: ApiKey, idempotency_key: str, fingerprint: str, ttl: timedelta
) -> str | None:
    """Claim the Idempotency-Key for this request: None to go ahead, or the job id to replay.

    IdempotencyKeyReused when it named a different request; IdempotencyInProgress while the first request
    with it is still being accepted.
    """
    for _attempt in range(2):
        now = utcnow()
        try:
            async with sessions() as session, session.begin():
                session.add(
                    IdempotencyRecord(
                        key_id=key.id,
                        idempotency_key=idempotency_key,
                        request_hash=fingerprint,
                        created_at=now,
                        expires_at=now + ttl,
                    )
                )
            return None
        except IntegrityError:
            pass
        async with sessions() as session, session.begin():
            record: IdempotencyRecord | None = await session.scalar(_record(key, idempotency_key))
            if record is None:
                continue
            expired = record.expires_at <= now
            abandoned = record.job_id is None and record.created_at <= now - ABANDONED_AFTER
            if expired or abandoned:
                await session.delete(record)
                continue
            if record.request_hash != fingerprint:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was already used with a different request; use a new key.",
                    param="Idempotency-Key",
                )
            if record.job_id is None:
                raise IdempotencyInProgress(headers={"Retry-After": "1"})
            return record.job_id
    raise IdempotencyInProgress(headers={"Retry-After": "1"})


def complete(connection: Connection, *, key: ApiKey, idempotency_key: str, job_id: str) -> None:
    """Tie the Idempotency-Key to the job, in the connection's transaction: the one that queues the job."""
    connection.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.key_id == key.id, IdempotencyRecord.idempotency_key == idempotency_key)
        .values(job_id=job_id)
    )


async def abandon(*, sessions: async_sessionmaker[AsyncSession], key: ApiKey, idempotency_key: str) -> None:
    """Free the Idempotency-Key after a request that was not accepted, so a retry can use it."""
    async with sessions() as session, session.begin():
        await session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.key_id == key.id,
                IdempotencyRecord.idempotency_key == idempotency_key,
                IdempotencyRecord.job_id.is_(None),
            )
        )


def _record(key: ApiKey, idempotency_key: str) -> Any:
    return select(IdempotencyRecord).where(
        IdempotencyRecord.key_id == key.id, IdempotencyRecord.idempotency_key == idempotency_key
    )
