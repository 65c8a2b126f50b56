"""A small async load generator on httpx2: fixed concurrency, for a duration or a number of requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx2

Send = Callable[[httpx2.AsyncClient], Awaitable[httpx2.Response]]


@dataclass
class Result:
    """What a load run measured."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def count(self) -> int:
        """Requests answered with 2xx."""
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        """Successful requests per second."""
        return self.count / self.elapsed if self.elapsed else 0.0

    def percentile(self, p: float) -> float:
        """Latency percentile in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(int(len(ordered) * p / 100), len(ordered) - 1)] * 1000


async def run(
    send: Send, *, clients: int, seconds: float | None = None, total: int | None = None, timeout: float = 60.0
) -> Result:
    """Keep `clients` requests in flight until the time or the count runs out."""
    result = Result()
    limits = httpx2.Limits(max_connections=clients, max_keepalive_connections=clients)
    started = time.perf_counter()
    deadline = started + seconds if seconds is not None else None
    remaining = [total] if total is not None else None

    async def worker(client: httpx2.AsyncClient) -> None:
        while True:
            if deadline is not None and time.perf_counter() >= deadline:
                return
            if remaining is not None:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            began = time.perf_counter()
            try:
                response = await send(client)
            except httpx2.HTTPError:
                result.errors += 1
                continue
            result.statuses[response.status_code] = result.statuses.get(response.status_code, 0) + 1
            if 200 <= response.status_code < 300:
                result.latencies.append(time.perf_counter() - began)
            else:
                result.errors += 1

    async with httpx2.AsyncClient(limits=limits, timeout=timeout) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    result.elapsed = time.perf_counter() - started
    return result
