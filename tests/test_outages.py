"""Database outages with real processes: a PostgreSQL server of the test's own that it stops and starts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from imagegate.admin.web import COOKIE
from tests.fakes.postgres import PostgresServer, controlled_postgres, create_database
from tests.fakes.server import ServerProcess, base_env, imagegate, serve

pytestmark = pytest.mark.acceptance
REPO = Path(__file__).resolve().parents[1]
FAKE = json.dumps({"fake": {"type": "tests.fakes.backends:FakeBackend", "concurrency": 1}})
DEADLINE_SECONDS = 60


@pytest.fixture
def outage_pg() -> Iterator[PostgresServer]:
    """A server for this test alone (stopping it must not touch the session's) that keeps what it committed."""
    with controlled_postgres(durable=True) as server:
        yield server


def _env(database_url: str, tmp_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    env = base_env(
        IMAGEGATE_DATABASE_URL=database_url,
        IMAGEGATE_DATA_DIR=str(tmp_path / "data"),
        IMAGEGATE_ADMIN_PASSWORD="x" * 16,
        IMAGEGATE_POLL_INTERVAL_SECONDS="0.1",
        IMAGEGATE_BACKENDS=FAKE,
        IMAGEGATE_MODELS=json.dumps({"fake": "fake"}),
        IMAGEGATE_DEFAULT_MODEL="fake",
        PYTHONPATH=str(REPO),
    )
    created = imagegate("keys", "create", "outage", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    return env, {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}


def _until(check: Any, what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _job(server: ServerProcess, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    response = httpx2.get(f"{server.url}/v1/images/jobs/{job_id}", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def test_every_surface_answers_503_with_retry_after_while_the_database_is_down(
    outage_pg: PostgresServer, tmp_path: Path
) -> None:
    env, headers = _env(create_database(outage_pg.url, "imagegate"), tmp_path)
    with serve(env, tmp_path) as server:
        outage_pg.stop()
        requests: list[tuple[str, str, dict[str, Any]]] = [
            ("POST", "/v1/images/generate", {"json": {"prompt": "x"}}),
            ("GET", "/v1/images/jobs", {}),
            ("GET", "/v1/images/jobs/img_0123456789abcdef01234567", {}),
            ("POST", "/v1/images/generations", {"json": {"prompt": "x"}}),
            ("GET", "/v1/models", {}),
            ("GET", "/admin/keys", {"cookies": {COOKIE: "a-session-cookie"}}),
        ]
        for method, path, options in requests:
            response = httpx2.request(method, server.url + path, headers=headers, timeout=30, **options)
            assert response.status_code == 503, (path, response.status_code, response.text)
            assert response.headers["retry-after"].isdigit(), path
            assert "Traceback" not in response.text
            assert "127.0.0.1" not in response.text, path
        assert httpx2.get(f"{server.url}/v1/images/jobs", headers=headers, timeout=30).json()["error"]["code"] == (
            "database_unavailable"
        )
        assert httpx2.get(f"{server.url}/ready", timeout=30).status_code == 503

        outage_pg.start()
        response = _until(
            lambda: (
                (
                    r := httpx2.post(
                        f"{server.url}/v1/images/generate", json={"prompt": "back"}, headers=headers, timeout=30
                    )
                ).status_code
                == 200
                and r
            ),
            "the service to answer again",
        )
        assert response.json()["status"] == "succeeded"


def test_a_job_finishing_during_an_outage_is_recorded_when_the_database_is_back(
    outage_pg: PostgresServer, tmp_path: Path
) -> None:
    env, headers = _env(create_database(outage_pg.url, "imagegate"), tmp_path)
    gate = tmp_path / "finish"
    with serve(env, tmp_path) as server:
        accepted = httpx2.post(
            f"{server.url}/v1/images/generate",
            json={"prompt": f"file:{gate}"},
            headers={**headers, "Prefer": "respond-async"},
            timeout=10,
        )
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
        running = _until(lambda: (j := _job(server, job_id, headers))["status"] == "running" and j, "the job to run")
        queued = httpx2.post(  # waits behind it: the backend runs one job at a time
            f"{server.url}/v1/images/generate",
            json={"prompt": "next"},
            headers={**headers, "Prefer": "respond-async"},
            timeout=10,
        ).json()["id"]

        outage_pg.stop()
        gate.touch()  # the backend finishes while the database is away
        _until(lambda: f"recording job {job_id} waits for the database" in server.output(), "the record to wait")
        outage_pg.start()

        done = _until(lambda: (j := _job(server, job_id, headers))["status"] != "running" and j, "the record")
        assert done["status"] == "succeeded"
        assert done["started_at"] == running["started_at"]  # recorded, not run again
        assert server.output().count(f"fake: file:{gate}") <= 1
        assert _until(lambda: _job(server, queued, headers)["status"] == "succeeded", "the next job")
        assert httpx2.get(f"{server.url}/ready", timeout=30).status_code == 200
