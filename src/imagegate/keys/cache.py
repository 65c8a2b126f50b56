"""Verified keys remembered briefly per process, so a busy caller's requests do not each read its key row.

A change made through the key verbs in this process is seen at once (they bump `changes`); one made by another
process (the CLI, another server) is seen once the entry is older than the cache's lifetime, under a second.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from imagegate.keys.models import ApiKey

MAX_ENTRIES = 10_000
_changes = itertools.count(1)
_generation = 0


def key_changed() -> None:
    """A key was changed, rotated or deleted in this process: forget every cached key."""
    global _generation
    _generation = next(_changes)


@dataclass(frozen=True)
class _Entry:
    key: ApiKey
    stored_at: float
    generation: int


class KeyCache:
    """Token digest → the key it verified, for `seconds` (0 turns the cache off)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        # Digests being verified now → the verification's answer (None when it failed) and its generation.
        self._flights: dict[str, tuple[asyncio.Future[ApiKey | None], int]] = {}

    def get(self, digest: str) -> ApiKey | None:
        """The key verified for this digest less than `seconds` ago, with no key changed here since."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry.generation != _generation or self._clock() - entry.stored_at >= self.seconds:
            del self._entries[digest]
            return None
        return entry.key

    def generation(self) -> int:
        """Read before verifying, and handed to put: a change made meanwhile keeps the result out."""
        return _generation

    def put(self, digest: str, key: ApiKey, generation: int) -> None:
        """Remember a key just verified from the database (read after `generation` was taken)."""
        if self.seconds <= 0 or generation != _generation:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[digest] = _Entry(key, self._clock(), generation)

    async def verify_once(self, digest: str, verify: Callable[[], Awaitable[ApiKey]]) -> tuple[ApiKey, bool]:
        """The key verify() finds, shared by the requests that ask for it while one verification runs: (key, own).

        When the cached entry ages out under a burst, every request in flight would otherwise read the key
        itself, each holding a database connection the submits wait for. own is False for a key another request
        verified (the caller treats it as a cached one); a failed verification is not shared: each tries its own.
        """
        flight = self._flights.get(digest) if self.seconds > 0 else None
        if flight is not None:
            future, generation = flight
            shared = await asyncio.shield(future)  # a cancelled follower leaves the verification running
            if shared is not None and generation == _generation:
                return shared, False
        generation = _generation
        future = asyncio.get_running_loop().create_future()
        self._flights.setdefault(digest, (future, generation))
        key = None
        try:
            key = await verify()
        finally:
            if self._flights.get(digest, (None, 0))[0] is future:
                del self._flights[digest]
            future.set_result(key)
        self.put(digest, key, generation)
        return key, True
