"""Key verbs: create, update, rotate, verify, list, enable/disable, delete. Every change is audited."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from imagegate.db import utcnow
from imagegate.errors import InvalidApiKey, InvalidRequest, KeyDisabled, KeyExpired, NotFound
from imagegate.keys import audit
from imagegate.keys.audit import Actor
from imagegate.keys.cache import key_changed
from imagegate.keys.models import SCOPES, ApiKey
from imagegate.webhooks.service import new_secret as new_webhook_secret

TOKEN_PREFIX = "ig_"  # noqa: S105 - a prefix, not a secret
TOKEN_BYTES = 32
HANDLE_PREFIX = "key_"
# last_used_at is a hint for people, not an audit log: write it at most this often per key.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class Unset:
    """Marks a limit the caller did not mention (None means 'no limit')."""


UNSET: Any = Unset()


@dataclass
class KeyLimits:
    """The limits a key can carry; UNSET leaves a value as it is, None removes the limit."""

    allowed_models: list[str] | None = UNSET
    scopes: list[str] = UNSET
    rate_limit_per_minute: int | None = UNSET
    daily_image_quota: int | None = UNSET
    monthly_image_quota: int | None = UNSET
    max_concurrent_jobs: int | None = UNSET
    monthly_budget_usd: float | None = UNSET
    expires_at: datetime | None = UNSET
    name: str = field(default=UNSET)

    def given(self) -> dict[str, Any]:
        """The values that were set."""
        return {k: v for k, v in asdict(self).items() if not isinstance(v, Unset)}

    def validate(self) -> None:
        """InvalidRequest for a bad name, unknown scopes or limits below 1."""
        values = self.given()
        if "name" in values:
            check_name(values["name"])
        unknown = set(values.get("scopes") or ()) - set(SCOPES)
        if unknown:
            raise InvalidRequest(f"Unknown scope(s): {', '.join(sorted(unknown))}; use {', '.join(SCOPES)}.")
        for name in ("rate_limit_per_minute", "daily_image_quota", "monthly_image_quota", "max_concurrent_jobs"):
            if values.get(name) is not None and not 1 <= values[name] <= MAX_LIMIT:
                raise InvalidRequest(f"{name} must be between 1 and {MAX_LIMIT} (or none for no limit).")
        budget = values.get("monthly_budget_usd")
        if budget is not None and not 0 < budget <= MAX_LIMIT:
            raise InvalidRequest(f"monthly_budget_usd must be above 0 and at most {MAX_LIMIT} dollars (or none).")
        for name in ("allowed_models", "scopes"):
            if any("\x00" in item for item in values.get(name) or ()):
                raise InvalidRequest(f"{name} must not contain a NUL character.")


MAX_NAME_CHARS = 200
# Limits live in 32-bit integer columns; a billion is already "no limit" in practice.
MAX_LIMIT = 1_000_000_000


def parse_budget(value: str) -> float | None:
    """A budget in dollars typed by a person (12, 12.50): above 0 and at most MAX_LIMIT; None otherwise."""
    value = value.strip().removeprefix("$")
    whole, _dot, cents = value.partition(".")
    if not (whole or cents) or not all(part.isascii() and (part.isdigit() or not part) for part in (whole, cents)):
        return None
    dollars = float(value)
    return dollars if 0 < dollars <= MAX_LIMIT else None


def parse_limit(value: str) -> int | None:
    """A limit typed by a person: ASCII digits only (not '²' or '٣'), within 1..MAX_LIMIT; None otherwise."""
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > len(str(MAX_LIMIT)):
        return None
    number = int(value)
    return number if 1 <= number <= MAX_LIMIT else None


def check_name(name: str) -> None:
    """InvalidRequest unless the name has 1 to 200 characters."""
    if not name.strip() or len(name) > MAX_NAME_CHARS or "\x00" in name:
        raise InvalidRequest(f"A key's name needs 1 to {MAX_NAME_CHARS} characters (and no NUL).")


def hash_token(token: str) -> str:
    """SHA-256 of the raw token (the token is 256 random bits, so a fast hash is enough)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A raw key: 'ig_' + 43 URL-safe characters."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def new_handle() -> str:
    """A public id for lists and logs, unrelated to the secret."""
    return HANDLE_PREFIX + secrets.token_hex(6)


def _audit_values(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}


async def create_key(
    *,
    session: AsyncSession,
    name: str,
    expires_at: datetime | None = None,
    limits: KeyLimits | None = None,
    actor: Actor = "cli",
) -> tuple[ApiKey, str]:
    """Store a new key and return it with its raw token, which is never shown again."""
    limits = limits or KeyLimits()
    limits.validate()
    check_name(name)
    token = new_token()
    key = ApiKey(
        handle=new_handle(),
        name=name,
        token_hash=hash_token(token),
        enabled=True,
        created_at=utcnow(),
        expires_at=expires_at,
        scopes=list(SCOPES),
        webhook_secret=new_webhook_secret(),
    )
    for attribute, value in limits.given().items():
        setattr(key, attribute, value)
    session.add(key)
    await session.flush()
    detail = {"name": name, "expires_at": expires_at, **limits.given()}
    audit.record(session=session, actor=actor, action="key.create", handle=key.handle, **_audit_values(detail))
    return key, token


async def update_key(*, session: AsyncSession, handle: str, limits: KeyLimits, actor: Actor = "cli") -> ApiKey:
    """Change a key's name, expiry or limits."""
    limits.validate()
    key = await get_by_handle(session=session, handle=handle)
    changes = limits.given()
    for attribute, value in changes.items():
        setattr(key, attribute, value)
    await session.flush()
    key_changed()
    audit.record(session=session, actor=actor, action="key.update", handle=handle, **_audit_values(changes))
    return key


async def rotate_key(
    *, session: AsyncSession, handle: str, grace: timedelta, actor: Actor = "cli"
) -> tuple[ApiKey, str]:
    """Issue a new secret; the old one keeps working for the grace period, then stops."""
    key = await get_by_handle(session=session, handle=handle)
    token = new_token()
    now = utcnow()
    key.previous_token_hash = key.token_hash if grace > timedelta(0) else None
    key.previous_token_expires_at = now + grace if grace > timedelta(0) else None
    key.token_hash = hash_token(token)
    await session.flush()
    key_changed()
    audit.record(
        session=session, actor=actor, action="key.rotate", handle=handle, grace_seconds=int(grace.total_seconds())
    )
    return key, token


async def webhook_secret(*, session: AsyncSession, handle: str, rotate: bool = False, actor: Actor = "cli") -> str:
    """The key's webhook signing secret; a new one (the old stops signing at once) with rotate, or when it has none."""
    key = await get_by_handle(session=session, handle=handle)
    if rotate or not key.webhook_secret:
        key.webhook_secret = new_webhook_secret()
        await session.flush()
        key_changed()
        audit.record(session=session, actor=actor, action="key.webhook_secret.rotate", handle=handle)
    return key.webhook_secret


async def verify(*, session: AsyncSession, token: str) -> ApiKey:
    """The enabled, unexpired key for a raw token; InvalidApiKey, KeyDisabled or KeyExpired otherwise."""
    digest = hash_token(token)
    key = await session.scalar(
        select(ApiKey).where(or_(ApiKey.token_hash == digest, ApiKey.previous_token_hash == digest))
    )
    if key is None:
        raise InvalidApiKey()
    now = utcnow()
    require_current(key, digest, now)
    return await _usable(session, key, now)


def require_current(key: ApiKey, digest: str, now: datetime) -> None:
    """InvalidApiKey when the digest is the key's previous token and its grace period has ended."""
    if not hmac.compare_digest(key.token_hash, digest):
        grace_ends = key.previous_token_expires_at
        if not hmac.compare_digest(key.previous_token_hash or "", digest) or grace_ends is None or grace_ends <= now:
            raise InvalidApiKey(
                "This API key was replaced by a rotation and its grace period has ended; use the new one."
            )


async def verify_handle(*, session: AsyncSession, handle: str) -> ApiKey:
    """The enabled, unexpired key with this handle (a key acting without its secret, as a configured stand-in)."""
    key = await session.scalar(select(ApiKey).where(ApiKey.handle == handle))
    if key is None:
        raise InvalidApiKey(f"The key {handle!r} this service uses for keyless requests no longer exists.")
    return await _usable(session, key, utcnow())


async def _usable(session: AsyncSession, key: ApiKey, now: datetime) -> ApiKey:
    require_usable(key, now)
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        await session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
        key.last_used_at = now
    return key


def require_usable(key: ApiKey, now: datetime) -> None:
    """KeyDisabled or KeyExpired unless the key may be used now."""
    if not key.enabled:
        raise KeyDisabled(f"API key {key.handle} is disabled; ask the operator to enable it.")
    if key.expires_at is not None and key.expires_at <= now:
        raise KeyExpired(f"API key {key.handle} expired at {key.expires_at.isoformat()}; ask for a new one.")


async def list_keys(*, session: AsyncSession) -> list[ApiKey]:
    """Every key, oldest first."""
    return list((await session.scalars(select(ApiKey).order_by(ApiKey.id))).all())


async def get_by_handle(*, session: AsyncSession, handle: str) -> ApiKey:
    """The key with this handle; NotFound otherwise."""
    key = await session.scalar(select(ApiKey).where(ApiKey.handle == handle))
    if key is None:
        raise NotFound(f"No key with handle {handle!r}.")
    return key


async def set_enabled(*, session: AsyncSession, handle: str, enabled: bool, actor: Actor = "cli") -> ApiKey:
    """Enable or disable a key; its jobs are untouched."""
    key = await get_by_handle(session=session, handle=handle)
    key.enabled = enabled
    await session.flush()
    key_changed()
    audit.record(session=session, actor=actor, action="key.enable" if enabled else "key.disable", handle=handle)
    return key


async def delete_key(*, session: AsyncSession, handle: str, actor: Actor = "cli") -> None:
    """Delete a key; its jobs stay in the history, unlinked but still naming the handle."""
    key = await get_by_handle(session=session, handle=handle)
    await session.execute(delete(ApiKey).where(ApiKey.id == key.id))
    key_changed()
    audit.record(session=session, actor=actor, action="key.delete", handle=handle)
