"""Webhook verbs: enqueue a job's event in the transaction that changes it; claim, record and list deliveries."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, aliased

from imagegate.db import utcnow
from imagegate.jobs import queries
from imagegate.jobs.models import Job
from imagegate.keys.models import ApiKey
from imagegate.webhooks.models import DeliveryState, WebhookAttempt, WebhookDelivery

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
SECRET_BYTES = 24
CLAIM_LOCK = "imagegate.webhook.claim"


def new_secret() -> str:
    """A Standard Webhooks signing secret: 'whsec_' + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def new_delivery_id() -> str:
    """The webhook-id receivers deduplicate on: 'msg_' + 24 hex characters."""
    return "msg_" + secrets.token_hex(12)


def wants(target: Mapping[str, Any] | None, event: str) -> bool:
    """Whether a job's webhook (its `webhook` column) asks for the event."""
    return bool(target) and event in (target or {}).get("events", ())


def add_delivery(session: AsyncSession | Session, job: Job, event: str) -> bool:
    """Queue the event of a job loaded with its images and inputs, if its webhook wants it; True when queued.

    Call inside the transaction that changes the job, so the event is never lost nor sent for a change rolled back.
    """
    target = job.webhook
    if target is None or not wants(target, event):
        return False
    # Imported here: the native surface imports the job verbs, which call this module.
    from imagegate.api.native import render_job

    now = utcnow()
    payload = {"type": f"image.job.{event}", "timestamp": now.isoformat(), "data": render_job(job, target["base"])}
    session.add(
        WebhookDelivery(
            id=new_delivery_id(),
            job_id=job.id,
            key_id=job.key_id,
            event=event,
            url=target["url"],
            payload=json.dumps(payload, separators=(",", ":")),
            state=DeliveryState.PENDING,
            created_at=now,
            next_attempt_at=now,
        )
    )
    return True


def add_delivery_now(connection: Connection, job: Job, event: str) -> bool:
    """add_delivery in the connection's transaction, through a Session made only when the webhook wants the event."""
    if not wants(job.webhook, event):
        return False
    with Session(bind=connection, expire_on_commit=False) as session:
        added = add_delivery(session, job, event)
        session.flush()
    return added


async def enqueue(session: AsyncSession, job_id: str, event: str, target: Mapping[str, Any] | None) -> bool:
    """Queue the job's event when its webhook (target, known to the caller) wants it; True when queued.

    A job without a webhook costs nothing here: the job is read, in the changing transaction, only when sent.
    """
    if not wants(target, event):
        return False
    job = await queries.job_as_it_is_now(session, job_id)
    return job is not None and add_delivery(session, job, event)


@dataclass(frozen=True)
class Due:
    """A delivery this sender now holds: what to send, where, signed with which secret."""

    seq: int
    id: str
    url: str
    payload: str
    attempt: int
    created_at: datetime
    secret: str | None


async def any_due(session: AsyncSession) -> bool:
    """Whether a delivery may be due: a read, so an idle sender never takes the write lock."""
    found = await session.scalar(
        select(WebhookDelivery.seq)
        .where(WebhookDelivery.state == DeliveryState.PENDING, WebhookDelivery.next_attempt_at <= utcnow())
        .limit(1)
    )
    return found is not None


async def claim_due(session: AsyncSession, *, sender: str, lease_seconds: float) -> Due | None:
    """Take the oldest due delivery whose job has no earlier one still pending: one in flight per job, in order."""
    if session.get_bind().dialect.name == "postgresql":
        # Claimers of all processes take turns, so the head-of-line check below is exact.
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": CLAIM_LOCK})
    now = utcnow()
    earlier = aliased(WebhookDelivery)
    free = or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now)
    head = (
        select(WebhookDelivery.seq)
        .where(
            WebhookDelivery.state == DeliveryState.PENDING,
            WebhookDelivery.next_attempt_at <= now,
            free,
            ~select(earlier.seq)
            .where(
                earlier.job_id == WebhookDelivery.job_id,
                earlier.seq < WebhookDelivery.seq,
                earlier.state == DeliveryState.PENDING,
            )
            .exists(),
        )
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.seq)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    statement = (
        update(WebhookDelivery)
        .where(WebhookDelivery.seq == head, WebhookDelivery.state == DeliveryState.PENDING, free)
        .values(
            lease_until=now + timedelta(seconds=lease_seconds),
            leased_by=sender,
            attempts=WebhookDelivery.attempts + 1,
        )
        .returning(
            WebhookDelivery.seq,
            WebhookDelivery.id,
            WebhookDelivery.url,
            WebhookDelivery.payload,
            WebhookDelivery.attempts,
            WebhookDelivery.created_at,
            WebhookDelivery.key_id,
        )
        .execution_options(synchronize_session=False)
    )
    row = (await session.execute(statement)).first()
    if row is None:
        return None
    secret = await session.scalar(select(ApiKey.webhook_secret).where(ApiKey.id == row.key_id)) if row.key_id else None
    return Due(row.seq, row.id, row.url, row.payload, row.attempts, row.created_at, secret)


@dataclass(frozen=True)
class Outcome:
    """What one attempt gave: the response code (None when none came), the time taken, and what went wrong."""

    status_code: int | None
    latency_ms: int
    error: str | None = None

    @property
    def delivered(self) -> bool:
        """A 2xx answer is a delivery."""
        return self.status_code is not None and 200 <= self.status_code < 300


def backoff(attempt: int, *, initial: float, maximum: float) -> float:
    """Seconds before the next try after `attempt` failed ones: doubling from initial, capped at maximum."""
    return float(min(initial * 2 ** min(attempt - 1, 40), maximum))


async def record(
    sessions: async_sessionmaker[AsyncSession],
    due: Due,
    outcome: Outcome,
    *,
    sender: str,
    retry: tuple[float, float, float],
) -> str:
    """Log the attempt and settle the delivery: delivered, retried later, or given up; returns its state.

    retry is (initial backoff seconds, largest backoff seconds, hours to keep trying).
    """
    initial, maximum, hours = retry
    now = utcnow()
    if outcome.delivered:
        values: dict[str, Any] = {"state": DeliveryState.DELIVERED, "finished_at": now}
    else:
        wait = backoff(due.attempt, initial=initial, maximum=maximum)
        give_up = now + timedelta(seconds=wait) > due.created_at + timedelta(hours=hours)
        values = (
            {"state": DeliveryState.FAILED, "finished_at": now}
            if give_up
            else {"next_attempt_at": now + timedelta(seconds=wait)}
        )
    async with sessions() as session, session.begin():
        session.add(
            WebhookAttempt(
                delivery_seq=due.seq,
                at=now,
                status_code=outcome.status_code,
                latency_ms=outcome.latency_ms,
                error=(outcome.error or "")[:300] or None,
            )
        )
        # Fenced by the lease: a sender that lost it (it took too long) does not overwrite the newer try.
        await session.execute(
            update(WebhookDelivery)
            .where(
                and_(
                    WebhookDelivery.seq == due.seq,
                    WebhookDelivery.leased_by == sender,
                    WebhookDelivery.attempts == due.attempt,
                )
            )
            .values(lease_until=None, leased_by=None, **values)
        )
    return str(values.get("state", DeliveryState.PENDING))


@dataclass(frozen=True)
class DeliveryView:
    """A delivery with its attempts, for the job's API rendering and the admin page."""

    delivery: WebhookDelivery
    attempts: list[WebhookAttempt]


async def deliveries_of(session: AsyncSession, job_id: str) -> list[DeliveryView]:
    """A job's webhook deliveries in event order, each with its attempts oldest first."""
    deliveries = (
        await session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.job_id == job_id).order_by(WebhookDelivery.seq)
        )
    ).all()
    if not deliveries:
        return []
    attempts = (
        await session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_seq.in_([d.seq for d in deliveries]))
            .order_by(WebhookAttempt.id)
        )
    ).all()
    by_delivery: dict[int, list[WebhookAttempt]] = {d.seq: [] for d in deliveries}
    for attempt in attempts:
        by_delivery[attempt.delivery_seq].append(attempt)
    return [DeliveryView(d, by_delivery[d.seq]) for d in deliveries]


def render_deliveries(views: list[DeliveryView]) -> list[dict[str, Any]]:
    """Deliveries as the native API shows them."""
    return [
        {
            "id": view.delivery.id,
            "event": view.delivery.event,
            "url": view.delivery.url,
            "status": view.delivery.state,
            "attempt_count": view.delivery.attempts,
            "created_at": view.delivery.created_at.isoformat(),
            "next_attempt_at": view.delivery.next_attempt_at.isoformat()
            if view.delivery.state == DeliveryState.PENDING
            else None,
            "attempts": [
                {
                    "at": attempt.at.isoformat(),
                    "status_code": attempt.status_code,
                    "latency_ms": attempt.latency_ms,
                    "error": attempt.error,
                }
                for attempt in view.attempts
            ],
        }
        for view in views
    ]
