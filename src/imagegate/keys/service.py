"""Key verbs: create, verify, list, enable/disable, delete."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from imagegate.db import utcnow
from imagegate.errors import InvalidApiKey, KeyDisabled, KeyExpired, NotFound
from imagegate.keys.models import ApiKey

TOKEN_PREFIX = "ig_"  # noqa: S105 - a prefix, not a secret
TOKEN_BYTES = 32
HANDLE_PREFIX = "key_"
# last_used_at is a hint for people, not an audit log: write it at most this often per key.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def hash_token(token: str) -> str:
    """SHA-256 of the raw token (the token is 256 random bits, so a fast hash is enough)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A raw key: 'ig_' + 43 URL-safe characters."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def new_handle() -> str:
    """A public id for lists and logs, unrelated to the secret."""
    return HANDLE_PREFIX + secrets.token_hex(6)


async def create_key(session: AsyncSession, *, name: str, expires_at: datetime | None = None) -> tuple[ApiKey, str]:
    """Store a new key and return it with its raw token, which is never shown again."""
    token = new_token()
    key = ApiKey(
        handle=new_handle(),
        name=name,
        token_hash=hash_token(token),
        enabled=True,
        created_at=utcnow(),
        expires_at=expires_at,
    )
    session.add(key)
    await session.flush()
    return key, token


async def verify(*, session: AsyncSession, token: str) -> ApiKey:
    """The enabled, unexpired key for a raw token; InvalidApiKey, KeyDisabled or KeyExpired otherwise."""
    digest = hash_token(token)
    key = await session.scalar(select(ApiKey).where(ApiKey.token_hash == digest))
    if key is None or not hmac.compare_digest(key.token_hash, digest):
        raise InvalidApiKey()
    if not key.enabled:
        raise KeyDisabled(f"API key {key.handle} is disabled; ask the operator to enable it.")
    now = utcnow()
    if key.expires_at is not None and key.expires_at <= now:
        raise KeyExpired(f"API key {key.handle} expired at {key.expires_at.isoformat()}; ask for a new one.")
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        await session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
        key.last_used_at = now
    return key


async def list_keys(*, session: AsyncSession) -> list[ApiKey]:
    """Every key, oldest first."""
    return list((await session.scalars(select(ApiKey).order_by(ApiKey.id))).all())


async def get_by_handle(*, session: AsyncSession, handle: str) -> ApiKey:
    """The key with this handle; NotFound otherwise."""
    key = await session.scalar(select(ApiKey).where(ApiKey.handle == handle))
    if key is None:
        raise NotFound(f"No key with handle {handle!r}.")
    return key


async def set_enabled(*, session: AsyncSession, handle: str, enabled: bool) -> ApiKey:
    """Enable or disable a key; its jobs are untouched."""
    key = await get_by_handle(session=session, handle=handle)
    key.enabled = enabled
    await session.flush()
    return key


async def delete_key(*, session: AsyncSession, handle: str) -> None:
    """Delete a key; its jobs stay in the history, unlinked but still naming the handle."""
    key = await get_by_handle(session=session, handle=handle)
    await session.execute(delete(ApiKey).where(ApiKey.id == key.id))
