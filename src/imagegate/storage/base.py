"""The Storage protocol: a flat key → bytes store with atomic writes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol


@dataclass(frozen=True)
class StoredObject:
    """One stored object, as listed for the orphan sweep."""

    key: str
    size: int
    modified_at: datetime


class Storage(Protocol):
    """Keys are '/'-separated relative names such as 'images/<name>.png'."""

    async def put(self, key: str, data: bytes | BinaryIO) -> None:
        """Write the object atomically (a file is copied a chunk at a time): readers see all of it or none."""
        ...

    async def get(self, key: str) -> bytes:
        """Read the object; FileNotFoundError when it does not exist."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove the object; True when something was removed."""
        ...

    def list(self, prefix: str) -> AsyncIterator[StoredObject]:
        """Every object whose key starts with prefix."""
        ...

    async def usage_bytes(self) -> int:
        """Total bytes stored."""
        ...

    async def check(self) -> None:
        """Raise when the storage cannot be written (readiness)."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The object's file on local disk, when there is one (served without a copy)."""
        ...
