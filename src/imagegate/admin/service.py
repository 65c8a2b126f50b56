"""Admin verbs: check and change the password, server-side sessions, login throttling."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.admin.models import AdminCredential, AdminSession, LoginFailure
from imagegate.admin.password import ADMIN_ROW_ID
from imagegate.db import utcnow
from imagegate.keys import audit

MIN_PASSWORD_CHARS = 12
HASHER = PasswordHasher()


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


async def check_password(sessions: async_sessionmaker[AsyncSession], password: str) -> bool:
    """True when the password matches the stored argon2 hash (verified in a thread: it is slow on purpose)."""
    async with sessions() as session:
        stored = await session.scalar(select(AdminCredential.password_hash).where(AdminCredential.id == ADMIN_ROW_ID))
    if stored is None:
        return False
    try:
        return await asyncio.to_thread(HASHER.verify, stored, password)
    except (VerificationError, InvalidHashError):
        return False


async def set_password(sessions: async_sessionmaker[AsyncSession], password: str, *, actor: audit.Actor) -> None:
    """Store a new password's hash and log every admin session out."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"the admin password needs at least {MIN_PASSWORD_CHARS} characters")
    hashed = await asyncio.to_thread(HASHER.hash, password)
    async with sessions() as session, session.begin():
        credential = await session.get(AdminCredential, ADMIN_ROW_ID)
        if credential is None:
            session.add(AdminCredential(id=ADMIN_ROW_ID, password_hash=hashed))
        else:
            credential.password_hash = hashed
            credential.updated_at = utcnow()
        await session.execute(delete(AdminSession))
        audit.record(session=session, actor=actor, action="admin.password_changed", handle=None)


async def adopt_configured_password(sessions: async_sessionmaker[AsyncSession], password: str) -> None:
    """Make a password given in the settings the one logins check (only its hash is stored)."""
    if not await check_password(sessions, password):
        await set_password(sessions, password, actor="cli")


@dataclass(frozen=True)
class NewSession:
    """A session just opened: the cookie value goes to the browser, the row keeps only its hash."""

    cookie: str
    csrf_token: str


async def open_session(sessions: async_sessionmaker[AsyncSession], *, hours: float) -> NewSession:
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


async def find_session(sessions: async_sessionmaker[AsyncSession], cookie: str | None) -> AdminSession | None:
    """The live session for a cookie, or None (unknown, logged out, revoked or expired)."""
    if not cookie:
        return None
    async with sessions() as session:
        found = await session.get(AdminSession, _digest(cookie))
    if found is None or found.expires_at <= utcnow():
        return None
    return found


async def close_session(sessions: async_sessionmaker[AsyncSession], cookie: str) -> None:
    """Log a session out: its cookie stops working everywhere at once."""
    async with sessions() as session, session.begin():
        await session.execute(delete(AdminSession).where(AdminSession.id == _digest(cookie)))
        audit.record(session=session, actor="admin", action="admin.logout", handle=None)


def csrf_ok(admin: AdminSession, submitted: str | None) -> bool:
    """The form carries this session's CSRF token."""
    return bool(submitted) and hmac.compare_digest(admin.csrf_token, submitted or "")


async def set_flash(sessions: async_sessionmaker[AsyncSession], admin: AdminSession, message: str | None) -> None:
    """Keep a message for the next page of this session only."""
    async with sessions() as session, session.begin():
        row = await session.get(AdminSession, admin.id)
        if row is not None:
            row.flash = message


async def take_flash(sessions: async_sessionmaker[AsyncSession], admin: AdminSession) -> str | None:
    """The pending message, removed as it is read: a reload does not show it again."""
    if admin.flash is None:
        return None
    await set_flash(sessions, admin, None)
    return admin.flash


async def throttled(
    sessions: async_sessionmaker[AsyncSession], client: str, *, max_failures: int, window: timedelta
) -> bool:
    """True when the client failed to log in max_failures times within the window."""
    async with sessions() as session:
        failures = await session.scalar(
            select(func.count()).where(LoginFailure.client == client, LoginFailure.at > utcnow() - window)
        )
    return (failures or 0) >= max_failures


async def note_failure(sessions: async_sessionmaker[AsyncSession], client: str, *, window: timedelta) -> None:
    """Count a failed login (and forget ones older than the window)."""
    now = utcnow()
    async with sessions() as session, session.begin():
        await session.execute(delete(LoginFailure).where(LoginFailure.at <= now - window))
        session.add(LoginFailure(client=client, at=now))
        audit.record(session=session, actor="admin", action="admin.login_failed", handle=None, client=client)
