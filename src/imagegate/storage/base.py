"""The Storage protocol: a flat key → bytes store with atomic writes."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from imagegate.errors import StorageUnavailable


@dataclass(frozen=True)
class StoredObject:
    """One stored object, as listed for the orphan sweep."""

    key: str
    size: int
    modified_at: datetime


@dataclass(frozen=True)
class Download:
    """An object being read: its size (known before the first byte) and its bytes a chunk at a time."""

    size: int
    chunks: AsyncIterator[bytes]


class Storage(Protocol):
    """Keys are '/'-separated relative names such as 'images/<name>.png'."""

    async def put(self, key: str, data: bytes | BinaryIO) -> None:
        """Write the object atomically (a file is copied a chunk at a time): readers see all of it or none."""
        ...

    async def get(self, key: str) -> bytes:
        """Read the object; FileNotFoundError when it does not exist."""
        ...

    async def stat(self, key: str) -> StoredObject:
        """The object's size and time, without its bytes; FileNotFoundError when it does not exist."""
        ...

    async def open(self, key: str) -> Download:
        """Start reading the object a chunk at a time; FileNotFoundError when it does not exist."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove the object; True when something was removed."""
        ...

    async def delete_many(self, keys: Sequence[str]) -> int:
        """Remove objects in as few calls as the store allows; how many were removed (an object store, which
        cannot tell, counts every key)."""
        ...

    def list(self, prefix: str) -> AsyncIterator[StoredObject]:
        """Every object whose key starts with prefix."""
        ...

    async def usage_bytes(self) -> int:
        """Total bytes stored."""
        ...

    async def check(self) -> None:
        """Write, read back and remove a probe object; raise when any of it fails (readiness)."""
        ...

    async def presign(self, key: str, expires_in: timedelta) -> str | None:
        """A URL that serves the object without ImageGate until it expires; None when the store has none."""
        ...

    def describe(self) -> str:
        """Which store this is, for operators (never a secret)."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The object's file on local disk, when there is one (served without a copy)."""
        ...


@runtime_checkable
class BlockingPut(Protocol):
    """A store whose write is a blocking call underneath (local files): work already in a worker thread writes there
    itself, saving a hand-off of its own."""

    def put_blocking(self, key: str, data: bytes | BinaryIO) -> None:
        """What put() does, in the calling thread; never call it on the event loop."""
        ...


def check_key(key: str) -> list[str]:
    """The key's parts; ValueError for keys that are absolute, empty or climb out of the store."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in key:
        raise ValueError(f"invalid storage key: {key!r}")
    return parts


def check_prefix(prefix: str) -> str:
    """A listing prefix: '' for everything, else the parts of a key with a trailing '/' kept."""
    stripped = prefix.strip("/")
    if stripped:
        check_key(stripped)
    return prefix


class StoreChecks:
    """What every store derives from its own listing and reads: its usage and its health check."""

    async def usage_bytes(self: Storage) -> int:
        """Sum of the sizes of everything stored."""
        total = 0
        async for item in self.list(""):
            total += item.size
        return total

    async def check(self: Storage) -> None:
        """Write a probe object, read it back and remove it."""
        key = f"health/{secrets.token_hex(8)}"
        payload = key.encode()
        await self.put(key, payload)
        try:
            if await self.get(key) != payload:
                raise StorageUnavailable("The storage returned something other than what was written to it.")
        finally:
            await self.delete_many([key])
