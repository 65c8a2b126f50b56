"""A real server killed with SIGKILL while `codex exec` runs: no second exec on that account, no orphan left."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx2
import pytest

from imagegate.backends.codex.workdirs import sessions_of
from tests.fakes.codex import exec_intervals, overlaps, process_alive, write_fake_codex
from tests.fakes.server import base_env, imagegate, loopback_client, serve

pytestmark = pytest.mark.acceptance


def _wait_for(path_glob: str, root: Path, timeout: float = 30) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(root.glob(path_glob))
        if found:
            return found[0]
        time.sleep(0.05)
    raise TimeoutError(path_glob)


def _poll(url: str, headers: dict[str, str], timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    with loopback_client(timeout=5) as client:
        while True:
            job: dict[str, object] = client.get(url, headers=headers).json()
            if job["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
                return job
            time.sleep(0.1)


def test_a_killed_server_leaves_no_exec_running_beside_the_retry(database_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    backends = {
        "codex": {
            "type": "codex",
            "concurrency": 1,
            "options": {
                "executable": str(write_fake_codex(tmp_path)),
                "accounts": [{"name": "only", "home": str(home)}],
                "kill_grace_seconds": 2,
                "usage_url": None,
            },
        }
    }
    env = base_env(
        IMAGEGATE_DATABASE_URL=database_url,
        IMAGEGATE_DATA_DIR=str(tmp_path / "data"),
        IMAGEGATE_ADMIN_PASSWORD="x" * 16,
        IMAGEGATE_POLL_INTERVAL_SECONDS="0.1",
        IMAGEGATE_BACKENDS=json.dumps(backends),
        IMAGEGATE_MODELS=json.dumps({"gpt-image-codex": "codex"}),
        IMAGEGATE_DEFAULT_MODEL="gpt-image-codex",
    )
    created = imagegate("keys", "create", "crash", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    headers = {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}
    workdirs = tmp_path / "data" / "codex" / "codex"

    with serve(env, tmp_path, name="killed") as server:
        accepted = httpx2.post(
            f"{server.url}/v1/images/generate",
            json={"prompt": "slow-once harbour"},
            headers={**headers, "Prefer": "respond-async"},
            timeout=10,
        )
        assert accepted.status_code == 202, accepted.text
        job_path = f"/v1/images/jobs/{accepted.json()['id']}"
        pids_file = _wait_for("*/run-*/pids.txt", workdirs)
        orphans = [int(pid) for pid in pids_file.read_text().split()]
        server.kill()
    assert all(process_alive(pid) for pid in orphans)  # the exec outlived the server, as a crash leaves it

    with serve(env, tmp_path, name="restarted") as server:
        job = _poll(server.url + job_path, headers)
        assert job["status"] == "succeeded", job
    assert not any(process_alive(pid) for pid in orphans)  # ended by the restart, not left running
    assert overlaps(home) == 0  # never two execs on the account at once
    assert len(exec_intervals(home)) == 2
    assert not (home / "CONFLICT").exists()
    (workdir,) = workdirs.iterdir()
    assert len(sessions_of(workdir)) == 2  # the killed run's session too: the sweep can remove its caches
