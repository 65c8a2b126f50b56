"""Codex accounts (CODEX_HOME folders): one exec per account at a time, across processes too.

An account is held with an exclusive flock on a lock file in its folder, so two ImageGate processes on one
machine never run two execs on one account. The exec inherits the lock's descriptor (process.run), so the lock
outlives a crash of the process that took it until the exec ends too; whoever then finds the account locked
by a dead process's exec ends it (process.end_orphan). Accounts that hit their usage limit rest until it resets.
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

from imagegate.backends.codex import process
from imagegate.db import utcnow

LOCK_FILE = ".imagegate.lock"
# How often a waiter looks again when another process holds every account.
RETRY_SECONDS = 0.25
Dispatch = Literal["round-robin", "primary-first"]


@dataclass
class Account:
    """One Codex login."""

    name: str
    home: Path
    exhausted_until: datetime | None = None
    _fd: int | None = field(default=None, repr=False)

    @property
    def lock_fd(self) -> int | None:
        """The descriptor holding this account's lock while it is held (an exec inherits it)."""
        return self._fd

    @property
    def run_record(self) -> Path:
        """Where the running exec's process group is noted."""
        return self.home / process.RUN_RECORD

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

    def __init__(self, accounts: list[Account], dispatch: Dispatch, *, kill_grace: float = 10.0) -> None:
        if not accounts:
            raise ValueError("at least one Codex account is needed")
        self.accounts = accounts
        self.dispatch: Dispatch = dispatch
        self.kill_grace = kill_grace
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

    @contextlib.asynccontextmanager
    async def hold_if_free(self, account: Account) -> AsyncIterator[bool]:
        """Hold this account if nobody does (True), without waiting; False when it is busy."""
        locked = await asyncio.to_thread(_try_lock, account)
        try:
            yield locked
        finally:
            if locked:
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
            for account in usable:
                if account._fd is None and account.run_record.exists():
                    await asyncio.to_thread(process.end_orphan, account.run_record, self.kill_grace)
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
        # Close, never LOCK_UN: an exec's straggler that inherited the descriptor keeps the lock until it ends.
        os.close(fd)
