"""Scale-out on one PostgreSQL: throughput with 1, 2 and 4 worker processes, and the cross-process sync overhead.

python -m bench.scaleout [--scale tiny|full] [--database-url postgresql+asyncpg://user@host:port]
Without --database-url a PostgreSQL server of its own is started on loopback. Every process runs on this
machine; the backend is the demo one with a delay (latency-bound) and a limit far above what runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx2
from tests.fakes.postgres import controlled_postgres, create_database

from bench import load, servers

BACKEND_LIMIT = 64  # far above what runs: the processes' slots bound the work, never the limit
SLOTS_PER_WORKER = 4  # IMAGEGATE_WORKER_SLOTS: what one worker process takes on at once


@dataclass(frozen=True)
class Scale:
    """How big the runs are."""

    jobs: int  # per throughput run
    delay: float  # the demo backend's latency per job
    sync_requests: int  # per overhead run, one at a time


# Full: each throughput run lasts 12 rounds of the delay at 4 workers (48 at 1), so start-up and the last
# round's tail stay small beside it; the whole run takes about 5 minutes on an idle machine.
# Tiny: still two rounds at 4 workers (16 in flight), or its 4-worker row could not show any scaling.
SCALES = {"tiny": Scale(jobs=32, delay=0.2, sync_requests=5), "full": Scale(jobs=192, delay=1.0, sync_requests=40)}
WORKERS_UP_SECONDS = 120.0  # how long worker processes may take to start and register


def _backends(delay: float) -> str:
    return json.dumps({"demo": {"type": "demo", "concurrency": BACKEND_LIMIT, "options": {"delay_seconds": delay}}})


def _settings(database_url: str, work: Path, delay: float) -> dict[str, str]:
    return {
        "database_url": database_url,
        "data_dir": str(work / "data"),
        "backends": _backends(delay),
        "worker_slots": str(SLOTS_PER_WORKER),
        "wait_timeout_seconds": "600",
    }


@contextmanager
def _worker(work: Path, settings: dict[str, str], index: int) -> Iterator[subprocess.Popen[bytes]]:
    """`imagegate worker` with the same settings."""
    values = {"admin_password": "bench-admin-password", "log_level": "warning", **settings}
    env = servers.clean_env(**{f"IMAGEGATE_{k.upper()}": v for k, v in values.items()})
    with open(work / f"worker-{index}.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "imagegate.cli", "worker"], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=60)


def _fresh(base_url: str, root: Path, name: str) -> tuple[str, Path, str]:
    """A new database and folder, migrated, with a key: (database URL, folder, key)."""
    work = root / name
    work.mkdir()
    database_url = create_database(base_url, f"bench_{name}_{secrets.token_hex(3)}")
    return database_url, work, servers.create_key(work, database_url)


async def _workers_up(database_url: str, count: int) -> None:
    """Until `count` worker processes have registered: a run must not start before the capacity it measures."""
    dsn = database_url.replace("postgresql+asyncpg", "postgresql")
    connection = await asyncpg.connect(dsn)
    try:
        async with asyncio.timeout(WORKERS_UP_SECONDS):
            while await connection.fetchval("SELECT count(*) FROM worker") < count:  # noqa: ASYNC110 - other processes
                await asyncio.sleep(0.1)
    finally:
        await connection.close()


async def _sync_load(url: str, key: str, *, clients: int, total: int) -> load.Result:
    headers = {"Authorization": f"Bearer {key}"}

    async def send(client: httpx2.AsyncClient) -> httpx2.Response:
        body = {"prompt": "scale-out", "size": "16x16", "model": "demo"}
        return await client.post(f"{url}/v1/images/generate", json=body, headers=headers)

    # Warm: imports, caches and connections, with as many requests as the run keeps in flight (every worker's).
    await load.run(send, clients=clients, total=clients, timeout=600)
    return await load.run(send, clients=clients, total=total, timeout=600)


def throughput(base_url: str, root: Path, scale: Scale, workers: int) -> load.Result:
    """Jobs per second through one API process with `workers` worker processes, enough clients to fill them."""
    database_url, work, key = _fresh(base_url, root, f"w{workers}")
    settings = _settings(database_url, work, scale.delay)
    with ExitStack() as stack:
        gate = stack.enter_context(servers.imagegate(work, **settings, run_scheduler="false"))
        for index in range(workers):
            stack.enter_context(_worker(work, settings, index))
        asyncio.run(_workers_up(database_url, workers))
        clients = SLOTS_PER_WORKER * workers
        return asyncio.run(_sync_load(gate.url, key, clients=clients, total=scale.jobs))


def sync_overhead(base_url: str, root: Path, scale: Scale) -> tuple[load.Result, load.Result]:
    """One request at a time: answered by the process running the job, then by an API process beside a worker."""
    database_url, work, key = _fresh(base_url, root, "same")
    with servers.imagegate(work, **_settings(database_url, work, scale.delay)) as gate:
        same = asyncio.run(_sync_load(gate.url, key, clients=1, total=scale.sync_requests))
    database_url, work, key = _fresh(base_url, root, "cross")
    settings = _settings(database_url, work, scale.delay)
    with servers.imagegate(work, **settings, run_scheduler="false") as gate, _worker(work, settings, 0):
        asyncio.run(_workers_up(database_url, 1))
        cross = asyncio.run(_sync_load(gate.url, key, clients=1, total=scale.sync_requests))
    return same, cross


def table(
    scale: Scale, runs: dict[int, load.Result], same: load.Result, cross: load.Result, *, seconds: float
) -> list[str]:
    """The markdown table: measured, ratio or difference, goal, verdict."""
    one = runs[1].throughput
    lines = ["| Benchmark | Measured | Ratio | Goal | Verdict |", "| --- | --- | --- | --- | --- |"]
    for workers, result in runs.items():
        ratio = result.throughput / one if one else float("nan")
        goal, met = ("≥ 3.5x of 1 worker", ratio >= 3.5) if workers == 4 else ("", None)
        lines.append(
            f"| throughput, {workers} worker process(es) | {result.throughput:.2f} jobs/s "
            f"({result.count} jobs, errors {result.errors}) | {ratio:.2f}x | {goal} | {_verdict(met)} |"
        )
    overhead = cross.percentile(50) - same.percentile(50)
    lines.append(f"| sync, job run by the answering process | p50 {same.percentile(50):.0f} ms | | | |")
    lines.append(
        f"| sync, job run by another process | p50 {cross.percentile(50):.0f} ms | +{overhead:.0f} ms "
        f"| ≤ 50 ms more | {_verdict(overhead <= 50)} |"
    )
    lines.append("")
    lines.append(
        f"Demo backend, {scale.delay:g} s per job, limit {BACKEND_LIMIT}; {SLOTS_PER_WORKER} slots per worker "
        f"process; {scale.jobs} jobs per throughput run, {scale.sync_requests} sync requests per overhead run, "
        f"one at a time; PostgreSQL; {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"the whole benchmark took {seconds:.0f} s."
    )
    return lines


def _verdict(met: bool | None) -> str:
    return "" if met is None else ("**met**" if met else "**missed**")


def main() -> None:
    """Run every configuration and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--database-url", help="a PostgreSQL server's base URL (no database name)")
    args = parser.parse_args()
    scale = SCALES[args.scale]
    started = time.monotonic()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="imagegate-scaleout-") as folder:
        base_url = args.database_url or stack.enter_context(controlled_postgres()).url
        root = Path(folder)
        runs = {workers: throughput(base_url, root, scale, workers) for workers in (1, 2, 4)}
        same, cross = sync_overhead(base_url, root, scale)
    print("\n".join(table(scale, runs, same, cross, seconds=time.monotonic() - started)))


if __name__ == "__main__":
    main()
