"""7. The OpenAI-compatible path vs LiteLLM's proxy, side by side on one instant fake upstream, driven by wrk.

ImageGate runs its openai backend pointed at bench/upstream.py; LiteLLM's proxy (one worker, a master key, no
database) routes gpt-image-1 to the same upstream. LiteLLM lives in its own venv under .bench/ (never a
project dependency), installed on first use. wrk (installed with apt-get when missing and allowed) drives
both with the same JSON body; without it the project's async client does, and the table says which.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from tests.fakes.postgres import free_port

from bench import load, servers

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".bench"
MODEL = "gpt-image-1"
MASTER_KEY = "sk-bench-master-key"  # a throwaway proxy's
UPSTREAM_KEY = "sk-bench-upstream"
# (label, clients, prompt): the upstream answers prompts containing 'large' with a 3 MB image.
LOADS = (
    ("1 client, 64x64 image", 1, "a small picture"),
    ("16 clients, 64x64 image", 16, "a small picture"),
    ("64 clients, 64x64 image", 64, "a small picture"),
    ("8 clients, 1024x1024 noise PNG (3 MB)", 8, "a large picture"),
)
GOAL_RATIO = 1.5


@dataclass(frozen=True)
class Measured:
    """Throughput and latency of one load against one server."""

    throughput: float
    p50_ms: float
    p99_ms: float
    errors: int

    def cell(self) -> str:
        """The table cell."""
        errors = f", errors {self.errors}" if self.errors else ""
        return f"{self.throughput:.0f} req/s, p50 {self.p50_ms:.0f} ms, p99 {self.p99_ms:.0f} ms{errors}"


async def openai_path(work: Path, scale: Any) -> list[Any]:
    """Every load against ImageGate, then LiteLLM, in the same run; a row each with the ratio."""
    from bench.run import Row

    folder = work / "gateway"
    folder.mkdir(parents=True, exist_ok=True)
    proxy = litellm_executable() if scale.litellm else None
    driver = "wrk" if wrk_executable() else "async httpx2 client"
    rows = []
    with upstream(folder) as fake, _imagegate(folder, fake.url) as gate:
        key = servers.create_key(folder)
        with _litellm(folder, proxy, fake.url) if proxy else _absent() as lite:
            for label, clients, prompt in LOADS:
                ours = await measure(gate.url, key, clients, prompt, scale.gateway_seconds)
                theirs = await measure(lite.url, MASTER_KEY, clients, prompt, scale.gateway_seconds) if lite else None
                rows.append(_row(Row, label, driver, ours, theirs))
    return rows


def _row(row: Any, label: str, driver: str, ours: Measured, theirs: Measured | None) -> Any:
    if theirs is None:
        return row(f"7. OpenAI path, {label} ({driver})", ours.cell(), "LiteLLM not run (--litellm)", "-", None)
    ratio = ours.throughput / theirs.throughput if theirs.throughput else 0.0
    met = ratio >= GOAL_RATIO and ours.p99_ms <= theirs.p99_ms and ours.errors == 0
    return row(
        f"7. OpenAI path, {label} ({driver})",
        ours.cell(),
        f"LiteLLM {theirs.cell()}; ratio {ratio:.2f}",
        f"≥ {GOAL_RATIO}x LiteLLM, p99 ≤ LiteLLM's",
        met,
    )


def body(prompt: str) -> dict[str, Any]:
    """The generation both servers get."""
    return {"model": MODEL, "prompt": prompt, "size": "1024x1024", "n": 1}


async def measure(url: str, key: str, clients: int, prompt: str, seconds: float) -> Measured:
    """A short warm-up, then `seconds` of load at `clients` connections."""
    await _warm(url, key, prompt)
    wrk = wrk_executable()
    if wrk is not None:
        return await asyncio.to_thread(_wrk, wrk, url, key, clients, prompt, seconds)
    result = await load.run(
        lambda c: c.post(f"{url}/v1/images/generations", json=body(prompt), headers={"Authorization": f"Bearer {key}"}),
        clients=clients,
        seconds=seconds,
    )
    return Measured(result.throughput, result.percentile(50), result.percentile(99), result.errors)


async def _warm(url: str, key: str, prompt: str) -> None:
    async with httpx2.AsyncClient(timeout=60) as client:
        for _ in range(5):
            response = await client.post(
                f"{url}/v1/images/generations", json=body(prompt), headers={"Authorization": f"Bearer {key}"}
            )
            if response.status_code != 200:
                raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:300]}")


LUA = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def _wrk(wrk: str, url: str, key: str, clients: int, prompt: str, seconds: float) -> Measured:
    script = CACHE / f"post-{os.getpid()}.lua"
    script.parent.mkdir(exist_ok=True)
    script.write_text(LUA.format(body=_lua_string(json.dumps(body(prompt))), key=key))
    threads = min(clients, 2)
    out = subprocess.run(
        [
            wrk,
            f"-t{threads}",
            f"-c{clients}",
            f"-d{max(seconds, 1):g}s",
            "--timeout",
            "60s",
            "-s",
            str(script),
            f"{url}/v1/images/generations",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 120,
    ).stdout
    script.unlink(missing_ok=True)
    found = re.search(r"^RESULT (\d+) (\d+) (\d+) (\d+) (\d+)$", out, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"wrk printed no result: {out[-500:]}")
    requests, duration_us, errors, p50_us, p99_us = map(int, found.groups())
    return Measured((requests - errors) / (duration_us / 1e6), p50_us / 1000, p99_us / 1000, errors)


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk_executable() -> str | None:
    """wrk, installed with apt-get when it is missing and this runs as root; None when neither works."""
    found = shutil.which("wrk")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], capture_output=True, check=False, timeout=600)
        found = shutil.which("wrk")
    return found


def litellm_executable() -> Path:
    """LiteLLM's proxy in its own venv under .bench/, installed there when missing."""
    venv = CACHE / "litellm-venv"
    proxy = venv / "bin" / "litellm"
    if proxy.exists():
        return proxy
    print("installing LiteLLM's proxy into .bench/litellm-venv…", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"], check=True, timeout=1800)
    return proxy


@contextmanager
def upstream(workdir: Path) -> Iterator[servers.Server]:
    """The instant fake upstream under uvicorn (uvloop, httptools), one process."""
    port = free_port()
    args = ["--port", str(port), "--log-level", "warning", "--no-access-log", "--loop", "uvloop", "--http", "httptools"]
    with _process([sys.executable, "-m", "uvicorn", "bench.upstream:app", *args], ROOT, workdir / "upstream.log") as p:
        url = f"http://127.0.0.1:{port}"
        _wait_for(url, p, "/v1/images/generations", method="POST")
        yield servers.Server(url, p)


@contextmanager
def _imagegate(workdir: Path, upstream_url: str) -> Iterator[servers.Server]:
    backend = {
        "type": "openai",
        "concurrency": 256,
        "options": {"base_url": f"{upstream_url}/v1", "api_key": UPSTREAM_KEY},
    }
    settings = {
        "data_dir": str(workdir / "data"),
        "backends": json.dumps({"openai": backend}),
        "models": json.dumps({MODEL: "openai"}),
        "default_model": MODEL,
    }
    with servers.imagegate(workdir, **settings) as gate:
        yield gate


@contextmanager
def _litellm(workdir: Path, proxy: Path, upstream_url: str) -> Iterator[servers.Server]:
    port = free_port()
    config = workdir / "litellm.yaml"
    config.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": MODEL,
                        "litellm_params": {
                            "model": f"openai/{MODEL}",
                            "api_base": f"{upstream_url}/v1",
                            "api_key": UPSTREAM_KEY,
                        },
                    }
                ],
                "general_settings": {"master_key": MASTER_KEY},
                "litellm_settings": {"telemetry": False},
            }
        )
    )  # JSON is YAML
    env = servers.clean_env(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR")
    env.pop("DATABASE_URL", None)
    command = [str(proxy), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    with _process(command, workdir, workdir / "litellm.log", env) as process:
        url = f"http://127.0.0.1:{port}"
        _wait_for(url, process, "/health/liveliness", timeout=180)
        yield servers.Server(url, process)


@contextmanager
def _absent() -> Iterator[None]:
    yield None


@contextmanager
def _process(
    command: list[str], cwd: Path, log_path: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=env or servers.clean_env(), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for(url: str, process: subprocess.Popen[bytes], path: str, method: str = "GET", timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            httpx2.request(method, url + path, timeout=1, json=body("warm") if method == "POST" else None)
            return
        except httpx2.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not come up")
