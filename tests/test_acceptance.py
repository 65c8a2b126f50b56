"""Real server processes: the README quick start, and a crash mid-job that the next start settles."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from PIL import Image

from tests.fakes.server import START_TIMEOUT_SECONDS, base_env, imagegate, loopback_client, serve, until, worker
from tests.helpers import new_pg_database

pytestmark = pytest.mark.acceptance
SLOW_DEMO = json.dumps({"demo": {"type": "demo", "concurrency": 2, "options": {"delay_seconds": 3600}}})


def _poll(url: str, headers: dict[str, str], until: set[str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with loopback_client(timeout=5) as client:
        while True:
            job: dict[str, Any] = client.get(url, headers=headers).json()
            if job["status"] in until or time.monotonic() > deadline:
                return job
            time.sleep(0.05)


def test_quick_start_as_a_new_user(tmp_path: Path) -> None:
    env = base_env()
    with serve(env, tmp_path) as server:
        banner = server.output()
        assert "generated an admin password" in banner
        assert f"Log in with it at {server.url}/admin" in banner  # where to use it
        assert "imagegate admin set-password" in banner  # and how to change it
        # Said once the port answers, after the banner the app's start printed.
        assert banner.index(f"ImageGate listening on {server.url}") > banner.index("generated an admin password")
        created = imagegate("keys", "create", "me", env=env, cwd=tmp_path)
        assert created.returncode == 0, created.stderr
        token = created.stdout.strip().splitlines()[-1]
        headers = {"Authorization": f"Bearer {token}"}

        response = httpx2.post(
            f"{server.url}/v1/images/generate",
            headers=headers,
            timeout=60,
            json={"prompt": "a lighthouse at dusk", "size": "256x256"},
        )
        assert response.status_code == 200, response.text
        image = httpx2.get(response.json()["images"][0]["url"], timeout=10)
        assert image.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(image.content)).size == (256, 256)

        out = tmp_path / "out" / "cat.webp"
        client = imagegate(
            "generate",
            "a cat",
            "-o",
            str(out),
            "--url",
            server.url,
            "--key",
            token,
            "--size",
            "128x96",
            "--count",
            "2",
            env=env,
            cwd=tmp_path,
        )
        assert client.returncode == 0, client.stderr
        assert Image.open(out).size == (128, 96)
        assert Image.open(out).format == "WEBP"
        assert Image.open(tmp_path / "out" / "cat-2.webp").format == "WEBP"
        assert (tmp_path / "data" / "imagegate.db").exists()
        assert server.terminate() in (0, -15)  # uvicorn re-raises SIGTERM after a clean shutdown
        assert "Application shutdown complete" in server.output()
    with serve(env, tmp_path, name="again") as server:
        assert "generated an admin password" not in server.output()
        jobs = httpx2.get(f"{server.url}/v1/images/jobs", headers=headers, timeout=10).json()
        assert len(jobs["data"]) == 2


def _env_with_key(database_url: str, tmp_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Server environment on the test database, and auth headers for a key made with the CLI."""
    env = base_env(
        IMAGEGATE_DATABASE_URL=database_url,
        IMAGEGATE_DATA_DIR=str(tmp_path / "data"),
        IMAGEGATE_ADMIN_PASSWORD="x" * 16,
        IMAGEGATE_POLL_INTERVAL_SECONDS="0.1",
    )
    created = imagegate("keys", "create", "acceptance", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    return env, {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}


def test_a_job_running_when_the_server_is_killed_settles_on_the_next_start(database_url: str, tmp_path: Path) -> None:
    env, headers = _env_with_key(database_url, tmp_path)
    with serve({**env, "IMAGEGATE_BACKENDS": SLOW_DEMO}, tmp_path, name="slow") as server:
        accepted = httpx2.post(
            f"{server.url}/v1/images/generate",
            json={"prompt": "interrupted"},
            headers={**headers, "Prefer": "respond-async"},
            timeout=10,
        )
        assert accepted.status_code == 202
        job_path = f"/v1/images/jobs/{accepted.json()['id']}"
        assert _poll(server.url + job_path, headers, {"running"})["status"] == "running"
        server.kill()
    with serve(env, tmp_path, name="recovered") as server:
        job = _poll(server.url + job_path, headers, {"succeeded", "failed"})
        assert job["status"] == "succeeded"
        assert len(job["images"]) == 1


def test_api_process_without_workers_and_a_separate_worker_process(database_url: str, tmp_path: Path) -> None:
    env, headers = _env_with_key(database_url, tmp_path)
    with serve({**env, "IMAGEGATE_RUN_SCHEDULER": "false"}, tmp_path, name="api") as server:
        queued = httpx2.post(
            f"{server.url}/v1/images/generate",
            json={"prompt": "who runs me"},
            headers={**headers, "Prefer": "respond-async"},
            timeout=10,
        )
        assert queued.status_code == 202
        with worker(env, tmp_path) as process:  # the deadline includes the worker's start
            job = _poll(queued.json()["status_url"], headers, {"succeeded", "failed"}, timeout=START_TIMEOUT_SECONDS)
            assert job["status"] == "succeeded"
            waited = httpx2.post(
                f"{server.url}/v1/images/generate", json={"prompt": "and me"}, headers=headers, timeout=30
            )
            assert waited.status_code == 200, waited.text
            assert process.poll() is None
        assert process.returncode == 0


def test_two_servers_on_one_postgresql_share_a_keys_rate_limit(pg_base_url: str, tmp_path: Path) -> None:
    env, _headers = _env_with_key(new_pg_database(pg_base_url), tmp_path)
    created = imagegate("keys", "create", "shared", "--rate-limit", "4", env=env, cwd=tmp_path)
    headers = {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}
    with serve(env, tmp_path, name="a") as first, serve(env, tmp_path, name="b") as second:
        statuses = [
            httpx2.get(f"{server.url}/v1/images/jobs", headers=headers, timeout=10).status_code
            for server in (first, second, first, second, first, second)
        ]
    assert statuses == [200, 200, 200, 200, 429, 429]


def _metrics_with(url: str, line: str) -> str:
    """The /metrics text if it has the line yet, else empty."""
    text = httpx2.get(f"{url}/metrics", timeout=10).text
    return text if line in text else ""


def test_metrics_add_up_across_processes(tmp_path: Path) -> None:
    env = base_env(IMAGEGATE_ADMIN_PASSWORD="x" * 16)
    assert imagegate("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    created = imagegate("keys", "create", "metrics", env=env, cwd=tmp_path)
    headers = {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}
    with serve(env, tmp_path, name="one") as first, serve(env, tmp_path, name="two") as second:
        for server in (first, second):
            response = httpx2.post(
                f"{server.url}/v1/images/generate",
                json={"prompt": "count me", "size": "32x32"},
                headers=headers,
                timeout=30,
            )
            assert response.status_code == 200, response.text
        generate = 'imagegate_http_requests_total{method="POST",route="/v1/images/generate",status="200"} 2.0'
        # A request is counted once its answer has been sent, so the client can read /metrics a moment early.
        text = until(lambda: _metrics_with(first.url, generate), generate)
    assert 'imagegate_jobs_finished_total{backend="demo",model="demo",status="succeeded"} 2.0' in text
