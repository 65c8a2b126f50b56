"""How many jobs of one backend this process may run at once: its share of the limit, resized as workers come and go."""

from __future__ import annotations

import asyncio


class Slots:
    """A semaphore whose size can change; a smaller size takes effect as running jobs end."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0
        self._freed = asyncio.Event()

    def resize(self, capacity: int) -> None:
        """Allow this many at once from now on (jobs already running go on)."""
        self.capacity = capacity
        self._freed.set()

    async def acquire(self) -> None:
        """Wait until fewer than capacity are held, then hold one."""
        while self.held >= self.capacity:
            self._freed.clear()
            await self._freed.wait()
        self.held += 1

    def spare(self) -> int:
        """How many more could be held now without waiting."""
        return max(self.capacity - self.held, 0)

    def hold(self, count: int) -> None:
        """Hold count more at once: slots spare() said were free (only the one claim loop of a backend takes them)."""
        self.held += count

    def release(self) -> None:
        """Give one back."""
        self.held -= 1
        self._freed.set()
