"""Admin verbs: check and change the password, server-side sessions, login throttling, acting on jobs."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Insert, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.admin.models import AdminCredential, AdminSession, LoginFailure
from imagegate.admin.password import ADMIN_ROW_ID, password_hasher
from imagegate.db import utcnow
from imagegate.jobs import service as jobs
from imagegate.jobs.models import Job
from imagegate.jobs.service import JobContext
from imagegate.keys import audit
from imagegate.retention import SweepReport, sweep

MIN_PASSWORD_CHARS = 12


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


async def check_password(*, sessions: async_sessionmaker[AsyncSession], password: str) -> bool:
    """True when the password matches the stored argon2 hash (verified in a thread: it is slow on purpose)."""
    async with sessions() as session:
        stored = await session.scalar(select(AdminCredential.password_hash).where(AdminCredential.id == ADMIN_ROW_ID))
    if stored is None:
        return False
    try:
        return await asyncio.to_thread(password_hasher().verify, stored, password)
    except (VerificationError, InvalidHashError):
        return False


async def set_password(*, sessions: async_sessionmaker[AsyncSession], password: str, actor: audit.Actor) -> None:
    """Store a new password's hash and log every admin session out."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"the admin password needs at least {MIN_PASSWORD_CHARS} characters")
    hashed = await asyncio.to_thread(password_hasher().hash, password)
    async with sessions() as session, session.begin():
        await session.execute(_upsert_credential(session.get_bind().dialect.name, hashed))
        await session.execute(delete(AdminSession))
        audit.record(session=session, actor=actor, action="admin.password_changed", handle=None)


def _upsert_credential(dialect: str, hashed: str) -> Insert:
    """One statement: processes started together on a fresh database must not race to insert the row."""
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    now = utcnow()
    statement = insert(AdminCredential).values(id=ADMIN_ROW_ID, password_hash=hashed, created_at=now, updated_at=now)
    return statement.on_conflict_do_update(
        index_elements=[AdminCredential.id], set_={"password_hash": hashed, "updated_at": now}
    )


async def adopt_configured_password(*, sessions: async_sessionmaker[AsyncSession], password: str) -> None:
    """Make a password given in the settings the one logins check (only its hash is stored)."""
    if not await check_password(sessions=sessions, password=password):
        await set_password(sessions=sessions, password=password, actor="cli")


@dataclass(frozen=True)
class NewSession:
    """A session just opened: the cookie value goes to the browser, the row keeps only its hash."""

    cookie: str
    csrf_token: str


async def open_session(*, sessions: async_sessionmaker[AsyncSession], hours: float) -> NewSession:
    """A new admin session."""
    cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    now = utcnow()
    async with sessions() as session, session.begin():
        await session.execute(delete(AdminSession).where(AdminSession.expires_at <= now))
        session.add(
            AdminSession(id=_digest(cookie), csrf_token=csrf, created_at=now, expires_at=now + timedelta(hours=hours))
        )
        audit.record(session=session, actor="admin", action="admin.login", handle=None)
    return NewSession(cookie, csrf)


async def find_session(*, sessions: async_sessionmaker[AsyncSession], cookie: str | None) -> AdminSession | None:
    """The live session for a cookie, or None (unknown, logged out, revoked or expired).

    Its one-time message is taken as the session is found: whatever page comes next shows it or drops it,
    so a new key's secret never waits in the database; an expired session is deleted with its message.
    """
    if not cookie:
        return None
    async with sessions() as session, session.begin():
        found = await session.get(AdminSession, _digest(cookie))
        if found is None:
            return None
        if found.expires_at <= utcnow():
            await session.delete(found)
            return None
        if found.flash is not None:
            clear = update(AdminSession).where(AdminSession.id == found.id).values(flash=None)
            await session.execute(clear.execution_options(synchronize_session=False))
    return found


async def close_session(*, sessions: async_sessionmaker[AsyncSession], cookie: str) -> None:
    """Log a session out: its cookie stops working everywhere at once."""
    async with sessions() as session, session.begin():
        await session.execute(delete(AdminSession).where(AdminSession.id == _digest(cookie)))
        audit.record(session=session, actor="admin", action="admin.logout", handle=None)


def csrf_ok(admin: AdminSession, submitted: str | None) -> bool:
    """The form carries this session's CSRF token."""
    return bool(submitted) and hmac.compare_digest(admin.csrf_token, submitted or "")


async def set_flash(*, sessions: async_sessionmaker[AsyncSession], admin: AdminSession, message: str | None) -> None:
    """Keep a message for the next page of this session only."""
    async with sessions() as session, session.begin():
        row = await session.get(AdminSession, admin.id)
        if row is not None:
            row.flash = message


async def take_flash(*, admin: AdminSession) -> str | None:
    """The pending message (already removed from the database when the session was found)."""
    return admin.flash


# One advisory lock id for login attempts on PostgreSQL: counting and recording an attempt is one step.
LOGIN_LOCK_ID = 0x1A6E5B18
MAX_CLIENT_CHARS = 64


def client_label(host: str) -> str:
    """The client's address as counted for throttling: as is, or a digest when longer than the column."""
    return host if len(host) <= MAX_CLIENT_CHARS else "sha256:" + _digest(host)[: MAX_CLIENT_CHARS - 7]


async def begin_attempt(
    *, sessions: async_sessionmaker[AsyncSession], client: str, max_failures: int, window: timedelta
) -> int | None:
    """Count a login attempt before its password is checked; None (not counted) when the client is throttled.

    The attempt is recorded as a failure until finish_attempt says otherwise, so concurrent wrong passwords
    cannot all be evaluated past the limit: the insert and the count are serialised per database.
    """
    now = utcnow()
    async with sessions() as session, session.begin():
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": LOGIN_LOCK_ID})
        await session.execute(delete(LoginFailure).where(LoginFailure.at <= now - window))  # takes SQLite's lock
        failures = await session.scalar(
            select(func.count()).where(LoginFailure.client == client, LoginFailure.at > now - window)
        )
        if (failures or 0) >= max_failures:
            return None
        attempt = LoginFailure(client=client, at=now)
        session.add(attempt)
        await session.flush()
        return attempt.id


async def finish_attempt(*, sessions: async_sessionmaker[AsyncSession], attempt: int, client: str, ok: bool) -> None:
    """A right password un-counts its attempt; a wrong one stays counted and is audited."""
    async with sessions() as session, session.begin():
        if ok:
            await session.execute(delete(LoginFailure).where(LoginFailure.id == attempt))
        else:
            audit.record(session=session, actor="admin", action="admin.login_failed", handle=None, client=client)


# What the operator does to jobs and storage: any key's job, each action audited.


async def cancel_job(*, ctx: JobContext, job_id: str, actor: Literal["admin", "cli"] = "admin") -> Job:
    """Cancel any key's queued or running job as the operator (admin UI or CLI); Conflict when it has finished."""
    job = await jobs.cancel(ctx=ctx, job_id=job_id, key=None)
    async with ctx.sessions() as session, session.begin():
        audit.record(session=session, actor=actor, action="admin.job_cancel", handle=job.key_handle, job=job_id)
    return job


async def delete_job(*, ctx: JobContext, job_id: str, actor: Literal["admin", "cli"] = "admin") -> None:
    """Delete any key's job that is not running, with its files, as the operator (in the admin UI or the CLI);
    Conflict while it runs."""
    job = await jobs.get_job(ctx=ctx, job_id=job_id, key=None)
    await jobs.delete_job(ctx=ctx, job_id=job_id, key=None, by=actor)
    async with ctx.sessions() as session, session.begin():
        audit.record(session=session, actor=actor, action="admin.job_delete", handle=job.key_handle, job=job_id)


async def cleanup(*, ctx: JobContext) -> SweepReport:
    """Run the retention sweep now, and audit what it removed."""
    report = await sweep(sessions=ctx.sessions, storage=ctx.storage, settings=ctx.settings, backends=ctx.backends)
    async with ctx.sessions() as session, session.begin():
        audit.record(
            session=session,
            actor="admin",
            action="admin.cleanup",
            handle=None,
            expired_jobs=report.expired_jobs,
            deleted_files=report.deleted_files,
            orphan_files=report.orphan_files,
        )
    return report
