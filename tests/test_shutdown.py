"""Graceful shutdown with real server processes: every waiting request gets its surface's "still running"."""

from __future__ import annotations

import signal
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.fakes.server import job_of, serve, serve_env, until
from tests.helpers import new_pg_database

pytestmark = pytest.mark.acceptance


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_waiting_requests_are_answered_with_their_job_before_the_process_exits(
    signum: signal.Signals, pg_base_url: str, tmp_path: Path
) -> None:
    env, headers = serve_env(new_pg_database(pg_base_url), tmp_path)
    env["IMAGEGATE_SHUTDOWN_GRACE_SECONDS"] = "1"
    gate = tmp_path / "never-before-restart"
    with serve(env, tmp_path) as server, ThreadPoolExecutor(3) as pool:

        def post(path: str, prompt: str) -> httpx2.Response:
            return httpx2.post(f"{server.url}{path}", json={"prompt": prompt}, headers=headers, timeout=120)

        running: Future[httpx2.Response] = pool.submit(post, "/v1/images/generate", f"file:{gate}")
        until(lambda: _jobs(server, headers) == ["running"], "the first job to run")
        queued = pool.submit(post, "/v1/images/generate", "queued behind it")
        openai = pool.submit(post, "/v1/images/generations", "queued on the OpenAI surface")
        until(lambda: sorted(_jobs(server, headers)) == ["queued", "queued", "running"], "three waiting requests")

        server.process.send_signal(signum)
        answers = {
            name: f.result(timeout=60) for name, f in [("running", running), ("queued", queued), ("openai", openai)]
        }
        assert server.process.wait(timeout=60) in (0, -signum, 128 + signum)  # uvicorn re-raises the signal
        assert "Application shutdown complete" in server.output()

    for name in ("running", "queued"):  # the running job was interrupted at the end of the grace and requeued
        assert answers[name].status_code == 202, (name, answers[name].text)
        assert answers[name].json()["status"] == "queued"
    still = answers["openai"]
    assert still.status_code == 504, still.text
    assert still.headers["x-should-retry"] == "false"
    job_id = still.json()["error"]["job_id"]
    assert job_id in still.json()["error"]["message"]

    gate.touch()
    with serve(env, tmp_path, name="restarted") as server:  # nothing accepted was lost
        ids = [answers["running"].json()["id"], answers["queued"].json()["id"], job_id]
        for one in ids:
            until(lambda one=one: job_of(server, one, headers)["status"] == "succeeded", f"job {one}")


def _jobs(server: Any, headers: dict[str, str]) -> list[str]:
    listed = httpx2.get(f"{server.url}/v1/images/jobs", headers=headers, timeout=10).json()
    return [job["status"] for job in listed["data"]]
