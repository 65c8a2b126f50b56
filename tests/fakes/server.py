"""A real `imagegate serve` process on a free loopback port, for acceptance tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2

from tests.fakes.postgres import free_port

REPO = Path(__file__).resolve().parents[2]
ONE_FAKE_BACKEND = json.dumps({"fake": {"type": "tests.fakes.backends:FakeBackend", "concurrency": 1}})
UNTIL_SECONDS = 60
START_TIMEOUT_SECONDS = 120  # a deadline, not a measurement: a busy machine takes its time to import and migrate


class ServerProcess:
    """A running server: its URL, process and captured output."""

    def __init__(self, process: subprocess.Popen[str], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    def output(self) -> str:
        """Everything the server printed so far."""
        return self.log.read_text()

    def kill(self) -> None:
        """SIGKILL: the process dies mid-work, as in a crash or power loss."""
        self.process.kill()
        self.process.wait(timeout=10)

    def terminate(self) -> int:
        """SIGTERM and wait for a graceful exit; returns the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def imagegate(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the imagegate command as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "imagegate.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@contextmanager
def serve(env: dict[str, str], cwd: Path, name: str = "server") -> Iterator[ServerProcess]:
    """Start `imagegate serve`, wait until /health answers, and stop it afterwards."""
    port = free_port()
    log = cwd / f"{name}-{port}.log"
    with open(log, "w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "imagegate.cli", "serve", "--port", str(port)],
            env=env,
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log)
    try:
        _wait_healthy(server)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def worker(env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start `imagegate worker` (no HTTP); stop it with SIGTERM afterwards."""
    log = open(cwd / "worker.log", "w")  # noqa: SIM115 - closed below, after the process
    process = subprocess.Popen(
        [sys.executable, "-m", "imagegate.cli", "worker"], env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def loopback_client(**options: Any) -> httpx2.Client:
    """An HTTP client for the test servers: plain HTTP on loopback, so it skips loading the CA bundle (~0.1 s)."""
    return httpx2.Client(verify=False, **options)


def _wait_healthy(server: ServerProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    with loopback_client(timeout=1) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{server.output()}")
            try:
                if client.get(f"{server.url}/health").status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            time.sleep(0.05)
    raise TimeoutError(f"server did not become healthy:\n{server.output()}")


def base_env(**extra: str) -> dict[str, str]:
    """The current environment without IMAGEGATE_* settings, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
    env.update(extra)
    return env


def serve_env(database_url: str, tmp_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The environment of a server on the database with the fake backend (one at a time), and a key's headers."""
    env = base_env(
        IMAGEGATE_DATABASE_URL=database_url,
        IMAGEGATE_DATA_DIR=str(tmp_path / "data"),
        IMAGEGATE_ADMIN_PASSWORD="x" * 16,
        IMAGEGATE_POLL_INTERVAL_SECONDS="0.1",
        IMAGEGATE_BACKENDS=ONE_FAKE_BACKEND,
        IMAGEGATE_MODELS=json.dumps({"fake": "fake"}),
        IMAGEGATE_DEFAULT_MODEL="fake",
        PYTHONPATH=str(REPO),
    )
    created = imagegate("keys", "create", "outage", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    return env, {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}


def until(check: Any, what: str) -> Any:
    """check()'s first true value, polled until a deadline."""
    deadline = time.monotonic() + UNTIL_SECONDS
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def job_of(server: ServerProcess, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    """The job as its native API shows it."""
    with loopback_client(timeout=10) as client:
        response = client.get(f"{server.url}/v1/images/jobs/{job_id}", headers=headers)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job
