"""The admin password: generated on first start when none is configured; only its argon2 hash is kept."""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.admin.models import AdminCredential
from imagegate.settings import Settings

ADMIN_ROW_ID = 1
# argon2-cffi's defaults (RFC 9106's low-memory profile), slow on purpose; only imagegate.testing swaps it.
HASHER = PasswordHasher()


def password_hasher() -> PasswordHasher:
    """The argon2 hasher every admin password is hashed and checked with."""
    return HASHER


async def _hash(password: str) -> str:
    return await asyncio.to_thread(password_hasher().hash, password)  # CPU work, slow on purpose: off the loop


async def ensure_admin_password(*, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> str | None:
    """On first start with no configured password, make one and store its hash; return it to show once."""
    if settings.admin_password is not None:
        return None
    password = secrets.token_urlsafe(18)
    try:
        async with sessions() as session, session.begin():
            if await session.scalar(select(AdminCredential.id).where(AdminCredential.id == ADMIN_ROW_ID)):
                return None
            session.add(AdminCredential(id=ADMIN_ROW_ID, password_hash=await _hash(password)))
    except IntegrityError:  # another process started at the same moment and made it
        return None
    return password
