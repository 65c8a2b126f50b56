"""Database outages with real processes: a PostgreSQL server of the test's own that it stops and starts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from imagegate.admin.web import COOKIE
from tests.fakes.postgres import PostgresServer, controlled_postgres, create_database
from tests.fakes.server import job_of, serve, serve_env, until

pytestmark = pytest.mark.acceptance


@pytest.fixture
def outage_pg() -> Iterator[PostgresServer]:
    """A server for this test alone (stopping it must not touch the session's) that keeps what it committed."""
    with controlled_postgres(durable=True) as server:
        yield server


def test_every_surface_answers_503_with_retry_after_while_the_database_is_down(
    outage_pg: PostgresServer, tmp_path: Path
) -> None:
    env, headers = serve_env(create_database(outage_pg.url, "imagegate"), tmp_path)
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
        unknown = httpx2.get(f"{server.url}/admin/jobz", cookies={COOKIE: "a-session-cookie"}, timeout=30)
        assert unknown.status_code == 404  # its page renders without the session it could not look up
        assert "No such endpoint: GET /admin/jobz." in unknown.text

        outage_pg.start()
        response = until(
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
    env, headers = serve_env(create_database(outage_pg.url, "imagegate"), tmp_path)
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
        running = until(lambda: (j := job_of(server, job_id, headers))["status"] == "running" and j, "the job to run")
        queued = httpx2.post(  # waits behind it: the backend runs one job at a time
            f"{server.url}/v1/images/generate",
            json={"prompt": "next"},
            headers={**headers, "Prefer": "respond-async"},
            timeout=10,
        ).json()["id"]

        outage_pg.stop()
        gate.touch()  # the backend finishes while the database is away
        until(lambda: f"recording job {job_id} waits for the database" in server.output(), "the record to wait")
        outage_pg.start()

        done = until(lambda: (j := job_of(server, job_id, headers))["status"] != "running" and j, "the record")
        assert done["status"] == "succeeded"
        assert done["started_at"] == running["started_at"]  # recorded, not run again
        assert server.output().count(f"fake: file:{gate}") <= 1
        assert until(lambda: job_of(server, queued, headers)["status"] == "succeeded", "the next job")
        assert httpx2.get(f"{server.url}/ready", timeout=30).status_code == 200
