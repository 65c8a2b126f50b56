"""The status page: what runs, how it is configured, and no secret on it."""

from __future__ import annotations

from imagegate import __version__
from imagegate.admin.status import MASK, mask_secrets, masked_database_url
from imagegate.admin.web import duration
from imagegate.settings import BackendConfig
from tests.helpers import ADMIN_PASSWORD, FAKE_TYPE, HarnessFactory, login

UPSTREAM_SECRET = "sk-status-page-secret"
METRICS_SECRET = "metrics-status-secret"


async def test_the_status_page_shows_what_runs_with_secrets_masked(harness_with: HarnessFactory) -> None:
    backends = {
        "fake": BackendConfig(type=FAKE_TYPE, concurrency=3, options={"api_key": UPSTREAM_SECRET, "region": "eu"}),
        "demo": BackendConfig(type="demo", concurrency=2),
    }
    async with harness_with(backends=backends, metrics_token=METRICS_SECRET) as harness:
        auth = await harness.auth()
        failed = await harness.client.post("/v1/images/generate", json={"prompt": "fail:out of ink"}, headers=auth)
        assert failed.json()["status"] == "failed"
        await login(harness.client)
        status = await harness.client.get("/admin/status")
    assert status.status_code == 200
    text = status.text
    assert f"ImageGate {__version__}" in text
    assert "SQLite" in text or "PostgreSQL" in text
    assert "fake-model" in text  # the fake backend's models
    assert failed.json()["id"] in text  # its last error links its job
    assert "the cleanup sweep runs every hour" in text
    assert '"region": "eu"' in text  # a backend option that is not a secret is shown
    for secret in (UPSTREAM_SECRET, METRICS_SECRET, ADMIN_PASSWORD):
        assert secret not in text
    assert MASK in text


def test_secrets_are_masked_wherever_they_are_nested() -> None:
    masked = mask_secrets({"backends": {"x": {"options": {"accounts": [{"token": "t", "home": "/h"}]}}}})
    assert masked == {"backends": {"x": {"options": {"accounts": [{"token": MASK, "home": "/h"}]}}}}
    assert mask_secrets({"api_key": None}) == {"api_key": None}
    assert mask_secrets({"key_cache_seconds": 0.5, "webhook_secret": "s"}) == {
        "key_cache_seconds": 0.5,
        "webhook_secret": MASK,
    }


def test_the_database_url_loses_its_password() -> None:
    shown = masked_database_url("postgresql+asyncpg://imagegate:hunter2secret@db:5432/imagegate")
    assert "hunter2secret" not in shown
    assert shown == "postgresql+asyncpg://imagegate:***@db:5432/imagegate"


def test_durations_are_said_in_words() -> None:
    assert [duration(s) for s in (3600, 7200, 5400, 86400 * 7, 90, 0.5)] == [
        "hour",
        "2 hours",
        "90 minutes",
        "7 days",
        "90 seconds",
        "0.5 seconds",
    ]


async def test_the_maintenance_page_says_how_often_the_sweep_runs(harness_with: HarnessFactory) -> None:
    async with harness_with() as harness:
        await login(harness.client)
        assert "It also runs by itself every hour," in (await harness.client.get("/admin/maintenance")).text
    async with harness_with(cleanup_interval_seconds=900) as harness:
        await login(harness.client)
        assert "It also runs by itself every 15 minutes," in (await harness.client.get("/admin/maintenance")).text
