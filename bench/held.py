"""2 and 3. Many concurrent sync requests held on a slow backend, while another process probes /health.

Each held request is one connection with one request on it, written and read by hand on asyncio streams: a
full HTTP client costs more CPU per request than the server's accept path and would be measured instead of
it. Every request's outcome is counted (succeeded, another status, a failed job, a connection error, or not
answered by the run's deadline), so the run ends on time and says what happened to each request.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import servers

ROOT = Path(__file__).resolve().parent.parent
PROBE_TIMEOUT_SECONDS = 10.0


@dataclass
class Held:
    """What happened to the held requests."""

    outcomes: Counter[str] = field(default_factory=Counter)
    created: list[datetime] = field(default_factory=list)
    elapsed: float = 0.0
    sent: float = 0.0  # when the last request had been written, from the start

    @property
    def succeeded(self) -> int:
        """Requests answered 200 with a succeeded job."""
        return self.outcomes["succeeded"]

    def created_span(self) -> float:
        """Seconds between the first and the last job the server recorded (its accept and submit phase)."""
        return (max(self.created) - min(self.created)).total_seconds() if self.created else float("nan")

    def summary(self) -> str:
        """The outcomes other than success, as `name n` pairs."""
        others = sorted((name, n) for name, n in self.outcomes.items() if name != "succeeded")
        return ", ".join(f"{name} {n}" for name, n in others) or "no failures"


@dataclass
class Probes:
    """What the /health prober saw."""

    answered: list[float]
    statuses: dict[str, int]
    unanswered: int
    slow: list[list[float]] = field(default_factory=list)  # [when, connect ms, total ms] of answers over 100 ms

    def percentile(self, p: float) -> float:
        """Latency percentile of the answered probes, in milliseconds."""
        if not self.answered:
            return float("nan")
        ordered = sorted(self.answered)
        return ordered[min(int(len(ordered) * p / 100), len(ordered) - 1)] * 1000

    @property
    def failed(self) -> int:
        """Probes not answered 200: unanswered in time, or answered with another status (a 503 at the cap)."""
        return self.unanswered + sum(self.statuses.values())


def request_bytes(host: str, port: int, key: str, body: dict[str, Any]) -> bytes:
    """POST /v1/images/generate with the key, on a connection closed after the answer."""
    payload = json.dumps(body).encode()
    head = (
        f"POST /v1/images/generate HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + payload


async def exchange(host: str, port: int, request: bytes) -> tuple[int, bytes]:
    """Send one request on a new connection; its status and body."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next(
            (int(v) for k, _, v in (ln.partition(":") for ln in lines[1:]) if k.lower() == "content-length"), -1
        )
        body = await (reader.readexactly(length) if length >= 0 else reader.read())
        return status, body
    finally:
        writer.close()


def outcome(status: int, body: bytes) -> tuple[str, datetime | None]:
    """What one answer says: its name for the counts, and when the server created its job."""
    try:
        job = json.loads(body)
    except ValueError:
        return f"HTTP {status}", None
    created = datetime.fromisoformat(job["created_at"]) if isinstance(job, dict) and job.get("created_at") else None
    if status == 200 and job.get("status") == "succeeded":
        return "succeeded", created
    if status == 200:
        return f"answered {job.get('status')}", created
    return f"HTTP {status} {job.get('error_code') or ''}".strip(), created


async def hold(url: str, key: str, requests: int, deadline: float) -> Held:
    """`requests` requests at once, each on its own connection; those unanswered by the deadline are cancelled."""
    address = urlsplit(url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    held = Held()
    started = time.perf_counter()

    async def one(i: int) -> None:
        body = {"prompt": f"benchmark image {i % 50}", "size": "64x64", "model": "demo"}
        try:
            status, answer = await exchange(host, port, request_bytes(host, port, key, body))
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            held.outcomes[f"connection {type(error).__name__}"] += 1
            return
        name, created = outcome(status, answer)
        held.outcomes[name] += 1
        if created is not None:
            held.created.append(created)

    tasks = [asyncio.create_task(one(i)) for i in range(requests)]
    held.sent = time.perf_counter() - started
    _done, pending = await asyncio.wait(tasks, timeout=deadline)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    held.outcomes["not answered by the deadline"] += len(pending)
    held.outcomes -= Counter()  # drop zero counts
    held.elapsed = time.perf_counter() - started
    return held


def start_prober(url: str) -> subprocess.Popen[str]:
    """bench.probe against the server, until its stdin is closed."""
    command = [sys.executable, "-m", "bench.probe", url, "--timeout", str(PROBE_TIMEOUT_SECONDS)]
    return subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def stop_prober(process: subprocess.Popen[str]) -> Probes:
    """Stop the prober and read what it saw (a probe in flight may take up to its timeout to end)."""
    output, _ = process.communicate("", timeout=PROBE_TIMEOUT_SECONDS + 30)
    seen = json.loads(output)
    return Probes(seen["answered"], seen["statuses"], seen["unanswered"], seen["slow"])


def settings_for(folder: Path, requests: int, delay: float, wait: float) -> dict[str, str]:
    """A demo backend taking `delay` per image, with room for every request at once."""
    backends = {"demo": {"type": "demo", "concurrency": requests, "options": {"delay_seconds": delay}}}
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "data_dir": str(folder / "data"),
        "backends": json.dumps(backends),
        "queue_max_size": str(requests * 2),
        "wait_timeout_seconds": str(wait),
    }


async def measure(
    folder: Path, requests: int, delay: float, wait: float, *, deadline: float, workers: int = 1
) -> tuple[Held, Probes, float]:
    """One run: the held requests, the probes beside them, and the peak RSS of the server's processes (MB).

    The server answers each waiter by `wait` seconds; requests still unanswered at `deadline` are given up.
    """
    settings = settings_for(folder, requests, delay, wait)
    with servers.imagegate(folder, **settings, workers=str(workers)) as gate:
        key = servers.create_key(folder)
        prober = start_prober(gate.url)
        try:
            held = await hold(gate.url, key, requests, deadline)
        finally:
            probes = stop_prober(prober)
        rss = gate.peak_rss_mb()
    return held, probes, rss
