"""6. A large history: key authentication, a job lookup and history pages, then the retention sweep.

Jobs are spread over 1,000 keys and the last 90 days; the measured key owns about a thousandth of them.
"""

from __future__ import annotations

import asyncio
import random
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx2
from sqlalchemy import insert
from tests.fakes.postgres import postgres_server

from bench import servers
from imagegate.db import create_engine, session_factory, utcnow
from imagegate.jobs.models import Job, JobImage
from imagegate.keys import service as keys
from imagegate.keys.models import ApiKey
from imagegate.migrations import upgrade
from imagegate.retention import sweep
from imagegate.settings import Settings
from imagegate.storage import LocalStorage

BATCH = 5_000
KEYS = 1_000
ADMIN_PASSWORD = "bench-admin-password"  # noqa: S105 - a throwaway server's
NOTES = Path(__file__).with_name("NOTES.md")


async def history_size(work: Path, scale: Any) -> list[Any]:
    """The benchmark on SQLite and on PostgreSQL."""
    from bench.run import Row

    rows: list[Row] = []
    folder = work / "history-sqlite"
    (folder / "data").mkdir(parents=True)
    rows += await _measure("SQLite", f"sqlite+aiosqlite:///{folder / 'data' / 'imagegate.db'}", folder, scale)
    with postgres_server() as base:
        connection = await asyncpg.connect(base.replace("postgresql+asyncpg", "postgresql") + "/postgres")
        await connection.execute("CREATE DATABASE bench")
        await connection.close()
        folder = work / "history-postgres"
        folder.mkdir()
        rows += await _measure("PostgreSQL", f"{base}/bench", folder, scale)
    return rows


async def _measure(label: str, url: str, folder: Path, scale: Any) -> list[Any]:
    from bench.run import Row

    await asyncio.to_thread(upgrade, url)
    began = time.perf_counter()
    token, own_ids = await _fill(url, scale.history_jobs, scale.expired_jobs)
    filled = time.perf_counter() - began
    # No scheduler: its start-up retention sweep would expire the jobs the sweep benchmark measures.
    settings = {
        "database_url": url,
        "data_dir": str(folder / "data"),
        "admin_password": ADMIN_PASSWORD,
        "run_scheduler": "false",
    }
    with servers.imagegate(folder, **settings) as gate:
        timings = await _probe(gate.url, token, own_ids, scale.samples)
    swept, sweep_seconds = await _sweep(url, folder)
    jobs = f"{scale.history_jobs:,} jobs"
    rows = [
        Row(f"6. {label}, {jobs}: {name}", f"p95 {p95:.1f} ms", "-", "p95 ≤ 50 ms", p95 <= 50)
        for name, p95 in timings.items()
    ]
    rows.append(
        Row(
            f"6. {label}: retention sweep of {scale.expired_jobs:,} expired jobs",
            f"{swept:,} expired in {sweep_seconds:.1f} s (filled in {filled:.0f} s)",
            "-",
            "≤ 60 s",
            swept == scale.expired_jobs and sweep_seconds <= 60,
        )
    )
    return rows


async def _fill(url: str, total: int, expired: int) -> tuple[str, list[str]]:
    engine = create_engine(url)
    sessions = session_factory(engine)
    now = utcnow()
    rng = random.Random(7)
    async with sessions() as session, session.begin():
        measured, token = await keys.create_key(session=session, name="measured")
        others = [
            {
                "handle": f"key_{i:012x}",
                "name": f"k{i}",
                "token_hash": secrets.token_hex(32),
                "enabled": True,
                "created_at": now,
                "scopes": ["generate", "edit", "read", "delete"],
            }
            for i in range(KEYS - 1)
        ]
        await session.execute(insert(ApiKey), others)
        key_ids = [measured.id, *[i + 2 for i in range(KEYS - 1)]]
    own_ids: list[str] = []
    due_left = expired
    for start in range(0, total, BATCH):
        jobs, images = [], []
        for n in range(start, min(start + BATCH, total)):
            key_index = n % KEYS
            job_id = f"img_{n:024x}"
            due = due_left > 0 and key_index != 0
            due_left -= due
            created = now - timedelta(days=90 * rng.random())
            jobs.append(_job(job_id, key_ids[key_index], created, now, due))
            if due:
                images.append(
                    {
                        "job_id": job_id,
                        "index": 0,
                        "name": f"{n:024x}.png",
                        "storage_key": f"images/{n}.png",
                        "width": 64,
                        "height": 64,
                        "format": "png",
                        "bytes": 1000,
                        "sha256": "0" * 64,
                        "created_at": created,
                    }
                )
            if key_index == 0:
                own_ids.append(job_id)
        async with sessions() as session, session.begin():
            await session.execute(insert(Job), jobs)
            if images:
                await session.execute(insert(JobImage), images)
    await engine.dispose()
    return token, own_ids


def _job(job_id: str, key_id: int, created: Any, now: Any, due: bool) -> dict[str, Any]:
    return {
        "id": job_id,
        "key_id": key_id,
        "key_handle": f"key_{key_id:012x}",
        "status": "succeeded",
        "model": "demo",
        "backend": "demo",
        "prompt": f"a picture number {job_id[-6:]} of a lighthouse",
        "size": "64x64",
        "width": 64,
        "height": 64,
        "quality": "auto",
        "output_format": "png",
        "count": 1,
        "params": {},
        "fair_tag": 0,
        "attempts": 1,
        "cancel_requested": False,
        "image_count": 1,
        "logs": "",
        "created_at": created,
        "started_at": created,
        "finished_at": created,
        "expires_at": now - timedelta(hours=1) if due else now + timedelta(days=30),
    }


async def _probe(url: str, token: str, own_ids: list[str], samples: int) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}"}
    rng = random.Random(11)
    async with httpx2.AsyncClient(base_url=url, timeout=30) as client:
        form = await client.get("/admin/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        await client.post("/admin/login", data={"csrf": csrf[1], "password": ADMIN_PASSWORD})
        probes: dict[str, Callable[[], Awaitable[httpx2.Response]]] = {
            "key authentication": lambda: client.get("/v1/images/jobs/img_missing", headers=headers),
            "job status lookup": lambda: client.get(f"/v1/images/jobs/{rng.choice(own_ids)}", headers=headers),
            "key's job list page": lambda: client.get("/v1/images/jobs?limit=20", headers=headers),
            "admin history page": lambda: client.get("/admin/history"),
            "admin history, status filter": lambda: client.get("/admin/history?status=failed"),
        }
        timings = {}
        for name, call in probes.items():
            await call()  # warm
            latencies = []
            for _ in range(samples):
                began = time.perf_counter()
                response = await call()
                latencies.append(time.perf_counter() - began)
                assert response.status_code in (200, 404), (name, response.status_code)
            latencies.sort()
            timings[name] = latencies[int(len(latencies) * 0.95) - 1] * 1000
    return timings


async def _sweep(url: str, folder: Path) -> tuple[int, float]:
    engine = create_engine(url)
    settings = Settings(database_url=url, data_dir=folder / "sweep", admin_password=ADMIN_PASSWORD)
    began = time.perf_counter()
    report = await sweep(sessions=session_factory(engine), storage=LocalStorage(folder / "sweep"), settings=settings)
    elapsed = time.perf_counter() - began
    await engine.dispose()
    return report.expired_jobs, elapsed


def document(machine: str, scale: str, table: str) -> str:
    """docs/benchmarks.md: how to run, the machine, the table, and the notes on what bounds the results."""
    notes = NOTES.read_text() if NOTES.exists() else ""
    return (
        "# Benchmarks\n\nRun them with `make bench` (about ten minutes; `python -m bench.run --scale tiny` for a quick "
        "check). Each figure is measured in the same run as its reference, on loopback.\n\n"
        f"Measured on {machine}, scale `{scale}`.\n\n{table}\n\n{notes}"
    )
