"""Live quota per account from the ChatGPT usage endpoint, read with the account's access token and cached.

Any failure (no login, expired token, offline, a changed format) means "unknown", never an error.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2

from imagegate.backends.codex import tokens

logger = logging.getLogger(__name__)
CACHE_SECONDS = 120.0
TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Window:
    """One rate-limit window: its label by length, what is left (None: unknown) and when it resets."""

    label: str
    remaining_percent: float | None
    resets_at: datetime | None


@dataclass(frozen=True)
class Quota:
    """An account's windows; known is False when the endpoint could not be read."""

    known: bool
    windows: tuple[Window, ...] = ()
    plan: str | None = None

    @property
    def lowest(self) -> float | None:
        """The smallest known remaining percentage, None when none is known."""
        known = [w.remaining_percent for w in self.windows if w.remaining_percent is not None]
        return min(known) if known else None


UNKNOWN = Quota(known=False)


def window_label(seconds: Any) -> str:
    """18000 → 5h, 604800 → weekly, else whole days or hours."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds <= 0:
        return "window"
    if seconds == 18_000:
        return "5h"
    if seconds == 604_800:
        return "weekly"
    if seconds % 86_400 == 0:
        return f"{int(seconds // 86_400)}d"
    return f"{seconds / 3600:g}h"


def parse(answer: Any) -> Quota:
    """The usage endpoint's JSON as windows; UNKNOWN when it has no rate_limit object."""
    if not isinstance(answer, dict) or not isinstance(answer.get("rate_limit"), dict):
        return UNKNOWN
    limits = answer["rate_limit"]
    windows = [
        _window(limits[name]) for name in ("primary_window", "secondary_window") if isinstance(limits.get(name), dict)
    ]
    plan = answer.get("plan_type")
    return Quota(known=True, windows=tuple(windows), plan=plan if isinstance(plan, str) else None)


def _window(raw: dict[str, Any]) -> Window:
    used = raw.get("used_percent")
    remaining = None
    if isinstance(used, int | float) and not isinstance(used, bool) and math.isfinite(used):
        remaining = min(max(100.0 - float(used), 0.0), 100.0)
    reset = raw.get("reset_at")
    resets_at = None
    if isinstance(reset, int | float) and not isinstance(reset, bool) and 0 < reset < 1e11:
        resets_at = datetime.fromtimestamp(reset, UTC)
    return Window(window_label(raw.get("limit_window_seconds")), remaining, resets_at)


class QuotaReader:
    """Reads each account's quota at most every CACHE_SECONDS; never writes auth.json."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self._cache: dict[Path, tuple[float, Quota]] = {}
        self._client: httpx2.AsyncClient | None = None

    async def read(self, home: Path) -> Quota:
        """The account's quota (cached), UNKNOWN on any failure."""
        cached = self._cache.get(home)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        quota = await self._fetch(home)
        self._cache[home] = (time.monotonic(), quota)
        return quota

    async def _fetch(self, home: Path) -> Quota:
        if not self.url:
            return UNKNOWN
        token = await asyncio.to_thread(tokens.access_token, home)
        if token is None:
            return UNKNOWN
        if self._client is None:
            self._client = httpx2.AsyncClient(timeout=TIMEOUT_SECONDS)
        try:
            response = await self._client.get(self.url, headers={"Authorization": f"Bearer {token}"})
            if response.status_code != 200:
                logger.info("codex usage endpoint answered %s", response.status_code)
                return UNKNOWN
            return parse(response.json())
        except (httpx2.HTTPError, ValueError) as exc:
            logger.info("codex usage endpoint unreadable: %s", type(exc).__name__)
            return UNKNOWN

    def forget(self) -> None:
        """Drop the cache (the next read asks again)."""
        self._cache.clear()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
