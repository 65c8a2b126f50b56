"""Servers for the benchmarks, on loopback: ImageGate as `imagegate serve` runs it, and the bare references."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
from tests.fakes.postgres import free_port


@dataclass
class Server:
    """A running server process."""

    url: str
    process: subprocess.Popen[bytes]

    def pids(self) -> list[int]:
        """The server process and the server processes it forked (`--workers`)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [self.process.pid, *(int(pid) for pid in children.read_text().split())]

    def peak_rss_mb(self) -> float:
        """The peak resident memory so far (VmHWM) of the server's processes, summed, in MB."""
        total = 0.0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
        return total

    def cpu_seconds(self) -> float:
        """CPU time (user and system) the server's processes have used so far."""
        ticks = 0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")


def _wait(url: str, process: subprocess.Popen[bytes], path: str = "/health") -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            httpx2.get(url + path, timeout=1)
            return
        except httpx2.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without ImageGate settings, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEGATE_", "PROMETHEUS_"))}
    env.update(extra)
    return env


@contextmanager
def imagegate(workdir: Path, **settings: str) -> Iterator[Server]:
    """`imagegate serve` in workdir with IMAGEGATE_<NAME> settings; a `workers` entry is its --workers option."""
    workers = settings.pop("workers", "1")
    port = free_port()
    values = {"admin_password": "bench-admin-password", "log_level": "warning", **settings}
    env = clean_env(**{f"IMAGEGATE_{k.upper()}": v for k, v in values.items()})
    with open(workdir / f"imagegate-{port}.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "imagegate.cli", "serve", "--port", str(port), "--workers", workers],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url, process)
        yield Server(url, process)
    finally:
        process.terminate()
        process.wait(timeout=60)


@contextmanager
def bare(workdir: Path, file: Path | None = None) -> Iterator[Server]:
    """The bare reference app under uvicorn, one process like ImageGate."""
    port = free_port()
    env = clean_env(BENCH_FILE=str(file or "/dev/null"))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.bare:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url, process, "/docs")
        yield Server(url, process)
    finally:
        process.terminate()
        process.wait(timeout=30)


def create_key(workdir: Path, database_url: str | None = None, *args: str) -> str:
    """A key made with the CLI, as an operator would."""
    env = clean_env(**({"IMAGEGATE_DATABASE_URL": database_url} if database_url else {}))
    # Key commands refuse a database that does not exist yet; an operator creates it first.
    subprocess.run(
        [sys.executable, "-m", "imagegate.cli", "db", "upgrade"], cwd=workdir, env=env, capture_output=True, check=True
    )
    out = subprocess.run(
        [sys.executable, "-m", "imagegate.cli", "keys", "create", "bench", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]
