"""ImageGate's benchmarks: each figure measured side by side with its reference in one run, as one table.

python -m bench.run [--scale tiny|full] [--only 1,2,3] [--litellm] [--held-requests N] [--write docs/benchmarks.md]
Every server runs on loopback; every load is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from PIL import Image
from tests.fakes.postgres import postgres_server

from bench import gateway, held, history, load, servers

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Scale:
    """How big each benchmark runs."""

    overhead_seconds: float
    held_requests: int
    held_delay: float
    edit_requests: int
    edit_bytes: int
    download_seconds: float
    history_jobs: int
    expired_jobs: int
    samples: int
    gateway_seconds: float = 10.0
    litellm: bool = True  # tiny runs skip LiteLLM (its proxy takes a minute to start) unless --litellm


SCALES = {
    "tiny": Scale(0.5, 40, 0.2, 4, 60_000, 0.5, 2_000, 200, 30, gateway_seconds=1.0, litellm=False),
    "full": Scale(10.0, 2000, 2.0, 200, 5_000_000, 10.0, 1_000_000, 100_000, 200),
}


@dataclass
class Row:
    """One line of the table."""

    benchmark: str
    measured: str
    reference: str
    goal: str
    met: bool | None

    def cells(self) -> list[str]:
        """The markdown cells."""
        verdict = "n/a" if self.met is None else ("**met**" if self.met else "**missed**")
        return [self.benchmark, self.measured, self.reference, self.goal, verdict]


def generate_body(i: int) -> dict[str, Any]:
    """A 64x64 demo generation."""
    return {"prompt": f"benchmark image {i % 50}", "size": "64x64", "model": "demo"}


async def overhead(work: Path, scale: Scale) -> list[Row]:
    """1. Sync generate with the demo backend vs a bare endpoint validating the same JSON, at 1/16/64 clients.

    On SQLite and on PostgreSQL in one process, with its CPU per job; then `--workers 2` on SQLite.
    """
    rows = []
    with servers.bare(work) as ref:
        bare = {clients: await _bare(ref, clients, scale) for clients in (1, 16, 64)}
        rows += await _overhead_on(work / "overhead-sqlite", "SQLite", {}, bare, scale)
        with postgres_server() as base:
            connection = await asyncpg.connect(base.replace("postgresql+asyncpg", "postgresql") + "/postgres")
            await connection.execute("CREATE DATABASE overhead")
            await connection.close()
            rows += await _overhead_on(
                work / "overhead-postgres", "PostgreSQL", {"database_url": f"{base}/overhead"}, bare, scale
            )
        rows += await _overhead_on(work / "overhead-workers", "SQLite, --workers 2", {}, bare, scale, workers=2)
    return rows


async def _bare(ref: servers.Server, clients: int, scale: Scale) -> load.Result:
    return await load.run(
        lambda c: c.post(f"{ref.url}/generate", json=generate_body(0)), clients=clients, seconds=scale.overhead_seconds
    )


async def _overhead_on(
    folder: Path, label: str, settings: dict[str, str], bare: dict[int, load.Result], scale: Scale, workers: int = 1
) -> list[Row]:
    rows = []
    with servers.imagegate(folder, **_data(folder), **settings, workers=str(workers)) as gate:
        key = servers.create_key(folder, settings.get("database_url"))
        headers = {"Authorization": f"Bearer {key}"}
        counter = iter(range(10**9))  # distinct prompts, so requests are not all alike
        for clients in (1, 16, 64):
            cpu = gate.cpu_seconds()
            ours = await load.run(
                lambda c: c.post(f"{gate.url}/v1/images/generate", json=generate_body(next(counter)), headers=headers),
                clients=clients,
                seconds=scale.overhead_seconds,
            )
            per_job = (gate.cpu_seconds() - cpu) / max(ours.count, 1) * 1000
            ratio = ours.throughput / bare[clients].throughput if bare[clients].throughput else 0.0
            rows.append(_overhead_row(label, clients, ours, bare[clients], ratio, per_job, workers))
    return rows


def _overhead_row(
    label: str, clients: int, ours: load.Result, bare: load.Result, ratio: float, per_job: float, workers: int
) -> Row:
    if clients != 64:
        goal, met = "(context)", None
    elif workers == 1:
        goal, met = "≥ 300 jobs/s, CPU ≤ 3 ms per job", ours.throughput >= 300 and per_job <= 3
    else:
        goal, met = "more than one process", None
    return Row(
        f"1. sync generate, {label}, {clients} client(s)",
        f"{ours.throughput:.0f} req/s, p99 {ours.percentile(99):.0f} ms, CPU {per_job:.1f} ms/job, "
        f"errors {ours.errors}",
        f"bare {bare.throughput:.0f} req/s, p99 {bare.percentile(99):.0f} ms; ratio {ratio:.2f}",
        goal,
        met,
    )


async def held_load(work: Path, scale: Scale) -> list[Row]:
    """2 and 3. Many concurrent sync requests to a 2 s backend, while another process probes /health."""
    n, delay = scale.held_requests, scale.held_delay
    # The server answers every waiter by its wait timeout; the client gives up a little after that.
    wait = max(30.0, delay * 30)
    held_run, probes, rss = await held.measure(work / "held", n, delay, wait, deadline=wait + 15)
    return [
        Row(
            f"2. {n} concurrent sync requests, backend {delay:g} s",
            f"{held_run.succeeded}/{n} succeeded in {held_run.elapsed:.2f} s ({held_run.summary()}); jobs created "
            f"over {held_run.created_span():.2f} s; peak RSS {rss:.0f} MB",
            f"ideal: {delay:g} s",
            "all succeed, ≤ 6 s, RSS ≤ 300 MB",
            held_run.succeeded == n and held_run.elapsed <= max(6.0, delay * 3) and rss <= 300,
        ),
        Row(
            "3. /health during benchmark 2",
            f"p50 {probes.percentile(50):.1f} ms, p99 {probes.percentile(99):.1f} ms over {len(probes.answered)} "
            f"answered probes; {probes.unanswered} unanswered in {held.PROBE_TIMEOUT_SECONDS:g} s, "
            f"other statuses {probes.statuses or 'none'}",
            "-",
            "p99 ≤ 20 ms, every probe answered",
            probes.percentile(99) <= 20 and not probes.failed,
        ),
    ]


def noise_png(size_bytes: int) -> bytes:
    """A PNG of random pixels of about size_bytes (noise does not compress)."""
    side = max(int((size_bytes / 3) ** 0.5), 8)
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


async def large_inputs(work: Path, scale: Scale) -> list[Row]:
    """4. Concurrent edits, each with 4 reference images (multipart, as the OpenAI SDK sends them)."""
    refs = [noise_png(scale.edit_bytes) for _ in range(4)]
    with servers.imagegate(work / "edits", **_data(work / "edits")) as gate:
        key = servers.create_key(work / "edits")
        headers = {"Authorization": f"Bearer {key}"}
        files = [("image[]", (f"ref{i}.png", data, "image/png")) for i, data in enumerate(refs)]
        result = await load.run(
            lambda c: c.post(
                f"{gate.url}/v1/images/edits",
                headers=headers,
                files=files,
                data={"prompt": "blend", "model": "demo", "size": "128x128"},
            ),
            clients=scale.edit_requests,
            total=scale.edit_requests,
            timeout=600,
        )
        rss = gate.peak_rss_mb()
    megabytes = sum(map(len, refs)) / 1e6
    return [
        Row(
            f"4. {scale.edit_requests} concurrent edits x 4 refs ({megabytes:.1f} MB each request)",
            f"{result.count}/{scale.edit_requests} accepted in {result.elapsed:.1f} s, peak RSS {rss:.0f} MB",
            "-",
            "all accepted, RSS ≤ 500 MB",
            result.count == scale.edit_requests and rss <= 500,
        )
    ]


async def downloads(work: Path, scale: Scale) -> list[Row]:
    """5. GET /generated/… of a 2 MB image vs a bare Starlette FileResponse of the same file, 16 clients."""
    data_dir = work / "downloads" / "data"
    name = secrets.token_urlsafe(18) + ".png"
    image = data_dir / "files" / "images" / name
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(os.urandom(2 * 1024 * 1024))
    with servers.imagegate(work / "downloads", data_dir=str(data_dir)) as gate, servers.bare(work, image) as ref:
        ours = await load.run(
            lambda c: c.get(f"{gate.url}/generated/{name}"), clients=16, seconds=scale.download_seconds
        )
        bare = await load.run(lambda c: c.get(f"{ref.url}/file"), clients=16, seconds=scale.download_seconds)
    ratio = ours.throughput / bare.throughput if bare.throughput else 0.0
    return [
        Row(
            "5. 2 MB image download, 16 clients",
            f"{ours.throughput:.0f} req/s",
            f"FileResponse {bare.throughput:.0f} req/s; ratio {ratio:.2f}",
            "≥ 0.8x FileResponse",
            ratio >= 0.8,
        )
    ]


def _data(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    return {"data_dir": str(folder / "data")}


BENCHMARKS: dict[int, Callable[[Path, Scale], Any]] = {
    1: overhead,
    2: held_load,
    4: large_inputs,
    5: downloads,
    6: history.history_size,
    7: gateway.openai_path,
}


def machine() -> str:
    """What the numbers were measured on."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        (line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), "0"
    )
    return (
        f"{os.cpu_count()} cores ({cpu}), {int(memory) / 1024 / 1024:.0f} GiB, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}, "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}"
    )


def table(rows: list[Row]) -> str:
    """The markdown table."""
    lines = ["| Benchmark | ImageGate | Reference | Goal | Result |", "| --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


async def main(argv: list[str]) -> int:
    """Run the chosen benchmarks and print the table (and write it, if asked)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--only", default="1,2,4,5,6,7", help="benchmark numbers (3 runs with 2)")
    parser.add_argument("--litellm", action="store_true", help="compare with LiteLLM at the tiny scale too (7)")
    parser.add_argument("--held-requests", type=int, help="how many held requests benchmark 2 sends (the scale's)")
    parser.add_argument("--write", type=Path, help="write the table with machine details to this markdown file")
    args = parser.parse_args(argv)
    scale = SCALES[args.scale]
    if args.litellm:
        scale = replace(scale, litellm=True)
    if args.held_requests:
        scale = replace(scale, held_requests=args.held_requests)
    work = Path(tempfile.mkdtemp(prefix="imagegate-bench-"))
    rows: list[Row] = []
    try:
        for number in sorted(int(n) for n in args.only.split(",")):
            print(f"running benchmark {number} ({args.scale})…", file=sys.stderr, flush=True)
            rows += await BENCHMARKS[number](work, scale)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    output = table(rows)
    print(output)
    if args.write:
        args.write.write_text(history.document(machine(), args.scale, output))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
