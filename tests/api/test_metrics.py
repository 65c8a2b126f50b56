"""GET /metrics and the structured logs."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import httpx2
import pytest
from pydantic import ValidationError

from imagegate import logs
from tests.helpers import GENERATE, Harness, HarnessFactory, make_settings

SERIES = re.compile(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", re.M)


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in exposition text (0 when absent)."""
    for series, raw_labels, value in SERIES.findall(text):
        found = dict(re.findall(r'(\w+)="([^"]*)"', raw_labels or ""))
        if series == name and found == labels:
            return float(value)
    return 0.0


async def test_metrics_count_jobs_http_and_live_queue(harness: Harness) -> None:
    before = (await harness.client.get("/metrics")).text
    auth = await harness.auth()
    assert (await harness.client.post(GENERATE, json={"prompt": "ok"}, headers=auth)).status_code == 200
    assert (await harness.client.post(GENERATE, json={"prompt": "fail: no"}, headers=auth)).status_code == 502
    response = await harness.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    ok = dict(backend="fake", model="fake-model", status="succeeded")
    failed = dict(backend="fake", model="fake-model", status="failed")
    assert (
        sample(text, "imagegate_jobs_finished_total", **ok) - sample(before, "imagegate_jobs_finished_total", **ok) == 1
    )
    assert (
        sample(text, "imagegate_jobs_finished_total", **failed)
        - sample(before, "imagegate_jobs_finished_total", **failed)
        == 1
    )
    assert sample(text, "imagegate_backend_errors_total", backend="fake", code="backend_error") >= 1
    assert sample(text, "imagegate_job_duration_seconds_count", backend="fake") >= 2
    assert sample(text, "imagegate_job_queue_wait_seconds_count", backend="fake") >= 2
    assert sample(text, "imagegate_queue_depth", backend="fake") == 0
    assert sample(text, "imagegate_jobs_running", backend="demo") == 0
    assert sample(text, "imagegate_stored_bytes") > 0
    route = dict(route="/v1/images/generate", method="POST", status="200")
    assert sample(text, "imagegate_http_requests_total", **route) >= 1
    assert "ig_" not in text
    assert "fail: no" not in text


async def test_metrics_token(harness_with: HarnessFactory) -> None:
    async with harness_with(metrics_token="scrape-secret-123") as harness:
        assert (await harness.client.get("/metrics")).status_code == 401
        assert (await harness.client.get("/metrics", headers={"Authorization": "Bearer nope"})).status_code == 401
        ok = await harness.client.get("/metrics", headers={"Authorization": "Bearer scrape-secret-123"})
        assert ok.status_code == 200


async def test_jobs_remember_the_request_id(harness: Harness) -> None:
    response = await harness.client.post(
        GENERATE, json={"prompt": "x"}, headers={**await harness.auth(), "x-request-id": "trace-abc-12345"}
    )
    assert response.headers["x-request-id"] == "trace-abc-12345"
    assert response.json()["request_id"] == "trace-abc-12345"


def test_log_lines_carry_the_request_id_in_both_formats(capsys: pytest.CaptureFixture[str]) -> None:
    token = logs.request_id_var.set("req_test42")
    try:
        for fmt in ("text", "json"):
            logs.configure(level="info", fmt=fmt)
            logging.getLogger("imagegate.http").info("GET /health 200", extra={"status": 200, "route": "/health"})
        lines = capsys.readouterr().err.strip().splitlines()
    finally:
        logs.request_id_var.reset(token)
        logging.getLogger().handlers[:] = []
    text, structured = lines[-2], json.loads(lines[-1])
    assert "request_id=req_test42" in text
    assert "status=200" in text
    assert structured["request_id"] == "req_test42"
    assert structured["route"] == "/health"
    assert structured["level"] == "info"


async def test_metrics_without_a_token_answer_only_the_allow_list(harness_with: HarnessFactory) -> None:
    async with harness_with() as harness:
        app = harness.app
        for client, status in ((("127.0.0.1", 1), 200), (("::1", 1), 200), (("203.0.113.9", 1), 403)):
            transport = httpx2.ASGITransport(app=app, client=client)
            async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as remote:
                response = await remote.get("/metrics")
                assert response.status_code == status, (client, response.text)
        assert "IMAGEGATE_METRICS_ALLOW_IPS" in response.json()["error"]["message"]
    async with harness_with(metrics_allow_ips="10.0.0.0/8") as harness:
        for client, status in ((("10.1.2.3", 1), 200), (("127.0.0.1", 1), 403)):
            transport = httpx2.ASGITransport(app=harness.app, client=client)
            async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as remote:
                assert (await remote.get("/metrics")).status_code == status, client


async def test_a_metrics_token_is_needed_even_from_the_allow_list(harness_with: HarnessFactory) -> None:
    async with harness_with(metrics_token="scrape-secret-123", metrics_allow_ips="0.0.0.0/0") as harness:
        assert (await harness.client.get("/metrics")).status_code == 401


def test_the_allow_list_must_be_addresses(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        make_settings("sqlite+aiosqlite://", tmp_path, metrics_allow_ips="localhost")


DOCS_PATHS = (
    "/docs",
    "/docs/assets/swagger-ui-bundle.js",
    "/redoc",
    "/redoc/assets/redoc.standalone.js",
    "/openapi.json",
)


async def test_the_api_docs_can_be_turned_off(harness_with: HarnessFactory) -> None:
    async with harness_with() as harness:
        for path in DOCS_PATHS:
            assert (await harness.client.get(path)).status_code == 200, path
    async with harness_with(api_docs_enabled=False) as harness:
        for path in DOCS_PATHS:
            assert (await harness.client.get(path)).status_code == 404, path
