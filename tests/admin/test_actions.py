"""What the operator does from the admin pages: cancel and delete jobs, delete keys, each confirmed first."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from imagegate.db import utcnow
from imagegate.jobs.models import Job
from imagegate.keys.models import ApiKey, AuditEvent
from tests.helpers import Harness, HarnessFactory, admin_csrf, fake_backends, login


async def submit(harness: Harness, prompt: str, auth: dict[str, str]) -> dict[str, Any]:
    """Submit a job without waiting for it."""
    response = await harness.client.post("/v1/images/jobs", json={"prompt": prompt}, headers=auth)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def job_row(harness: Harness, job_id: str) -> Job:
    """The job's row as stored."""
    async with harness.app.state.services.sessions() as session:
        job: Job | None = await session.scalar(select(Job).where(Job.id == job_id))
    assert job is not None
    return job


async def test_the_operator_cancels_a_running_job(harness: Harness) -> None:
    job = await submit(harness, "gate:forever", await harness.auth())
    await harness.fake.wait_started(1)
    csrf = await admin_csrf(harness)
    shown = await harness.client.get(f"/admin/jobs/{job['id']}")
    assert "Cancel job" in shown.text
    assert "cancel it first" in shown.text  # Delete is there, disabled, and says why
    cancelled = await harness.client.post(f"/admin/jobs/{job['id']}/cancel", data={"csrf": csrf})
    assert cancelled.status_code == 303
    row = await job_row(harness, job["id"])
    assert (row.status, row.error_message) == ("cancelled", "Cancelled by the operator while it was running.")
    after = await harness.client.get(f"/admin/jobs/{job['id']}")
    assert f"Cancelled: job {job['id']}" in after.text
    assert "Cancel job" not in after.text
    async with harness.app.state.services.sessions() as session:
        actions = (await session.scalars(select(AuditEvent.action))).all()
    assert "admin.job_cancel" in actions


async def test_the_operator_cancels_a_queued_job(harness_with: HarnessFactory) -> None:
    async with harness_with(backends=fake_backends(concurrency=1)) as harness:
        auth = await harness.auth()
        await submit(harness, "gate:first", auth)
        await harness.fake.wait_started(1)
        queued = await submit(harness, "second", auth)
        csrf = await admin_csrf(harness)
        assert (await harness.client.post(f"/admin/jobs/{queued['id']}/cancel", data={"csrf": csrf})).status_code == 303
        row = await job_row(harness, queued["id"])
        assert row.status == "cancelled"
        assert row.error_message == "Cancelled by the operator before it started."
        again = await harness.client.post(f"/admin/jobs/{queued['id']}/cancel", data={"csrf": csrf})
        assert again.status_code == 409
        assert "already finished" in again.text
        assert "Log out" in again.text  # the error page keeps the navigation
        harness.fake.open("gate:first")


async def test_cancel_needs_the_csrf_token(harness: Harness) -> None:
    job = await submit(harness, "gate:kept", await harness.auth())
    await harness.fake.wait_started(1)
    await login(harness.client)
    assert (await harness.client.post(f"/admin/jobs/{job['id']}/cancel", data={})).status_code == 403
    assert (await job_row(harness, job["id"])).status == "running"
    harness.fake.open("gate:kept")


async def test_deleting_a_job_asks_first(harness: Harness) -> None:
    auth = await harness.auth()
    job = (await harness.client.post("/v1/images/generate", json={"prompt": "a fox"}, headers=auth)).json()
    csrf = await admin_csrf(harness)
    asked = await harness.client.post(f"/admin/jobs/{job['id']}/delete", data={"csrf": csrf})
    assert asked.status_code == 200
    assert f"Delete job {job['id']}?" in asked.text
    assert 'name="confirm" value="yes"' in asked.text
    assert (await job_row(harness, job["id"])).deleted_at is None
    forged = await harness.client.post(f"/admin/jobs/{job['id']}/delete", data={"confirm": "yes"})
    assert forged.status_code == 403
    deleted = await harness.client.post(f"/admin/jobs/{job['id']}/delete", data={"csrf": csrf, "confirm": "yes"})
    assert deleted.status_code == 303
    row = await job_row(harness, job["id"])
    assert (row.deleted_at is not None, row.deleted_by) == (True, "admin")
    shown = await harness.client.get(f"/admin/jobs/{job['id']}")
    assert "Deleted by the operator in the admin UI " in shown.text
    assert "its files are gone" in shown.text
    assert "Delete job and files" not in shown.text
    history = (await harness.client.get("/admin/history")).text
    assert '<span class="status deleted">deleted</span> <span class="deleted-by">by the operator</span>' in history


async def test_a_job_of_a_deleted_key_can_still_be_deleted(harness: Harness) -> None:
    key, token = await harness.new_key("gone")
    job = (
        await harness.client.post(
            "/v1/images/generate", json={"prompt": "a fox"}, headers={"Authorization": f"Bearer {token}"}
        )
    ).json()
    csrf = await admin_csrf(harness)
    await harness.client.post(f"/admin/keys/{key.handle}/delete", data={"csrf": csrf, "confirm": "yes"})
    deleted = await harness.client.post(f"/admin/jobs/{job['id']}/delete", data={"csrf": csrf, "confirm": "yes"})
    assert deleted.status_code == 303
    assert (await job_row(harness, job["id"])).deleted_at is not None


async def test_deleting_a_key_asks_first(harness: Harness) -> None:
    key, _token = await harness.new_key("laptop")
    csrf = await admin_csrf(harness, "/admin/keys")
    asked = await harness.client.post(f"/admin/keys/{key.handle}/delete", data={"csrf": csrf})
    assert asked.status_code == 200
    assert f"Delete key laptop ({key.handle})?" in asked.text
    async with harness.app.state.services.sessions() as session:
        assert await session.scalar(select(ApiKey).where(ApiKey.handle == key.handle)) is not None
    deleted = await harness.client.post(f"/admin/keys/{key.handle}/delete", data={"csrf": csrf, "confirm": "yes"})
    assert deleted.status_code == 303
    async with harness.app.state.services.sessions() as session:
        assert await session.scalar(select(ApiKey).where(ApiKey.handle == key.handle)) is None


async def test_a_cleanup_from_the_admin_pages_is_audited_with_what_it_removed(harness: Harness) -> None:
    auth = await harness.auth()
    job = (await harness.client.post("/v1/images/generate", json={"prompt": "a fox"}, headers=auth)).json()
    image = harness.app.state.services.settings.data_dir / "files" / "images" / job["images"][0]["name"]
    assert image.exists()
    async with harness.app.state.services.sessions() as session, session.begin():
        await session.execute(update(Job).where(Job.id == job["id"]).values(expires_at=utcnow() - timedelta(1)))
    csrf = await admin_csrf(harness, "/admin/maintenance")
    cleaned = await harness.client.post("/admin/maintenance/cleanup", data={"csrf": csrf})
    assert cleaned.status_code == 303
    assert not image.exists()
    assert (await job_row(harness, job["id"])).status == "expired"
    async with harness.app.state.services.sessions() as session:
        event = await session.scalar(select(AuditEvent).where(AuditEvent.action == "admin.cleanup"))
    assert event is not None
    assert (event.actor, event.detail) == ("admin", {"expired_jobs": 1, "deleted_files": 1, "orphan_files": 0})
