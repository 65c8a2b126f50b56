"""Webhooks across real processes: a delivery outlives a killed server; several workers send each event once."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.fakes.receiver import receiver
from tests.fakes.server import base_env, imagegate, loopback_client, serve, worker
from tests.helpers import new_pg_database

pytestmark = pytest.mark.acceptance


def _env(database_url: str, tmp_path: Path) -> tuple[dict[str, str], dict[str, str], str]:
    """Server environment allowing loopback webhooks with quick retries; auth headers and the key's secret."""
    env = base_env(
        IMAGEGATE_DATABASE_URL=database_url,
        IMAGEGATE_DATA_DIR=str(tmp_path / "data"),
        IMAGEGATE_ADMIN_PASSWORD="x" * 16,
        IMAGEGATE_POLL_INTERVAL_SECONDS="0.1",
        IMAGEGATE_WEBHOOK_ALLOW_PRIVATE="true",
        IMAGEGATE_WEBHOOK_RETRY_INITIAL_SECONDS="0.2",
        IMAGEGATE_WEBHOOK_RETRY_MAX_SECONDS="0.5",
        IMAGEGATE_WEBHOOK_TIMEOUT_SECONDS="2",
    )
    created = imagegate("keys", "create", "hooks", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    handle = re.search(r"key_[0-9a-f]{12}", created.stdout)
    assert handle is not None
    secret = imagegate("keys", "webhook-secret", handle[0], env=env, cwd=tmp_path).stdout.strip()
    return env, {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}, secret


def _submit(url: str, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    response = httpx2.post(
        f"{url}/v1/images/generate", json=body, headers={**headers, "Prefer": "respond-async"}, timeout=10
    )
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def test_a_delivery_failing_when_the_server_is_killed_is_sent_after_the_restart(
    database_url: str, tmp_path: Path
) -> None:
    env, headers, secret = _env(database_url, tmp_path)
    with receiver() as hook:
        hook.statuses = [500] * 10_000
        with serve(env, tmp_path, name="first") as server:
            job = _submit(server.url, headers, {"prompt": "survive", "webhook_url": hook.url})
            hook.wait_for(1)
            server.kill()
        failed_tries = len(hook.received)
        hook.statuses = []
        with serve(env, tmp_path, name="second"):
            delivered = hook.wait_for(failed_tries + 1)[-1]
    payload = delivered.verified(secret)
    assert payload["data"]["id"] == job["id"]
    assert payload["data"]["status"] == "succeeded"
    assert {item.headers["webhook-id"] for item in hook.received} == {delivered.headers["webhook-id"]}


def test_several_processes_on_postgresql_send_each_event_once_and_in_order(pg_base_url: str, tmp_path: Path) -> None:
    env, headers, secret = _env(new_pg_database(pg_base_url), tmp_path)
    events = ["queued", "running", "succeeded"]
    jobs = 8
    with receiver() as hook, serve(env, tmp_path, name="api") as server, worker(env, tmp_path), worker(env, tmp_path):
        ids = [
            _submit(server.url, headers, {"prompt": f"p{i}", "webhook_url": hook.url, "webhook_events": events})["id"]
            for i in range(jobs)
        ]
        hook.wait_for(jobs * len(events), timeout=60)
        _wait_all_delivered(server.url, headers, ids)
        received = list(hook.received)
    payloads = [item.verified(secret) for item in received]
    assert len(received) == jobs * len(events)
    assert Counter((p["data"]["id"], p["type"]) for p in payloads) == Counter(
        {(job_id, f"image.job.{event}"): 1 for job_id in ids for event in events}
    )
    for job_id in ids:
        assert [p["data"]["status"] for p in payloads if p["data"]["id"] == job_id] == events
    assert len({item.headers["webhook-id"] for item in received}) == len(received)


def _wait_all_delivered(url: str, headers: dict[str, str], ids: list[str]) -> None:
    """Until every delivery of these jobs is recorded as delivered (after which nothing may be sent again)."""
    deadline = time.monotonic() + 60
    with loopback_client(timeout=10) as client:
        for job_id in ids:
            while True:
                hooks = client.get(f"{url}/v1/images/jobs/{job_id}", headers=headers).json()["webhooks"]
                if len(hooks) == 3 and all(h["status"] == "delivered" for h in hooks):
                    break
                assert time.monotonic() < deadline, hooks
                time.sleep(0.05)
