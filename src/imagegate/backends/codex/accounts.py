"""Codex accounts (CODEX_HOME folders): one exec per account at a time, across processes too.

An account is held with an exclusive flock on a lock file in its folder, so two ImageGate processes on one
machine never run two execs on one account. Accounts that hit their usage limit rest until it resets.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from imagegate.db import utcnow

LOCK_FILE = ".imagegate.lock"
# How often a waiter looks again when another process holds every account.
RETRY_SECONDS = 0.25


@dataclass
class Account:
    """One Codex login."""

    name: str
    home: Path
    exhausted_until: datetime | None = None
    _fd: int | None = field(default=None, repr=False)

    def resting(self, now: datetime) -> bool:
        """True while its usage limit has not reset."""
        return self.exhausted_until is not None and self.exhausted_until > now


class AllExhausted(Exception):
    """Every account has reached its usage limit."""

    def __init__(self, resets_at: datetime) -> None:
        super().__init__(f"all accounts exhausted until {resets_at.isoformat()}")
        self.resets_at = resets_at


class AccountPool:
    """Hands out free accounts in the configured order."""

    def __init__(self, accounts: list[Account], dispatch: Literal["round-robin", "primary-first"]) -> None:
        if not accounts:
            raise ValueError("at least one Codex account is needed")
        self.accounts = accounts
        self.dispatch = dispatch
        self._next = 0
        self._released = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, *, skip: set[str] | frozenset[str] = frozenset()) -> AsyncIterator[Account]:
        """Wait for a free account that is not resting and not in skip; AllExhausted when none can come."""
        account = await self._acquire(skip)
        try:
            yield account
        finally:
            await asyncio.to_thread(_unlock, account)
            async with self._released:
                self._released.notify_all()

    async def _acquire(self, skip: set[str] | frozenset[str]) -> Account:
        while True:
            now = utcnow()
            usable = [a for a in self._ordered() if a.name not in skip and not a.resting(now)]
            if not usable:
                resting = [a.exhausted_until for a in self.accounts if a.resting(now) and a.exhausted_until]
                raise AllExhausted(min(resting) if resting else now)
            for account in usable:
                if await asyncio.to_thread(_try_lock, account):
                    return account
            async with self._released:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._released.wait(), RETRY_SECONDS)

    def _ordered(self) -> list[Account]:
        if self.dispatch == "primary-first":
            return list(self.accounts)
        start = self._next % len(self.accounts)
        self._next += 1
        return self.accounts[start:] + self.accounts[:start]

    def rest(self, account: Account, until: datetime) -> None:
        """Leave an account alone until its usage limit resets."""
        account.exhausted_until = until


def _try_lock(account: Account) -> bool:
    if account._fd is not None:  # held by this process already
        return False
    account.home.mkdir(parents=True, exist_ok=True)
    fd = os.open(account.home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    account._fd = fd
    return True


def _unlock(account: Account) -> None:
    fd, account._fd = account._fd, None
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
