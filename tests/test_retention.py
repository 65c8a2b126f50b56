"""Retention: expire due jobs in batches until none is left, delete their files, remove orphans."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from imagegate import retention
from imagegate.db import utcnow
from imagegate.jobs.models import Job, JobImage, JobInput, JobStatus
from tests.fakes.backends import tiny_png
from tests.helpers import ASYNC, GENERATE, Harness, b64


async def _make_jobs(harness: Harness, count: int) -> list[dict[str, object]]:
    auth = await harness.auth()
    body = {"prompt": "keep", "reference_image_base64": b64(tiny_png())}
    return [(await harness.client.post(GENERATE, json=body, headers=auth)).json() for _ in range(count)]


async def _age(harness: Harness, job_ids: list[str], days: float) -> None:
    async with harness.app.state.services.sessions() as session, session.begin():
        await session.execute(update(Job).where(Job.id.in_(job_ids)).values(expires_at=utcnow() - timedelta(days=days)))


async def test_sweep_expires_due_jobs_in_batches_until_none_is_left(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "BATCH_SIZE", 2)
    jobs = await _make_jobs(harness, 6)
    due = [str(job["id"]) for job in jobs[:5]]
    await _age(harness, due, 1)
    files = harness.app.state.services.settings.data_dir / "files"
    assert len(list(files.rglob("*.png"))) == 12

    report = await retention.sweep(
        sessions=harness.app.state.services.sessions,
        storage=harness.app.state.services.storage,
        settings=harness.app.state.services.settings,
    )

    assert report.expired_jobs == 5
    assert report.deleted_files == 10
    assert len(list(files.rglob("*.png"))) == 2
    async with harness.app.state.services.sessions() as session:
        statuses = {row.id: row.status for row in (await session.execute(select(Job.id, Job.status))).all()}
        assert await session.scalar(select(func.count()).select_from(JobImage)) == 1
        assert await session.scalar(select(func.count()).select_from(JobInput)) == 1
    assert [statuses[job_id] for job_id in due] == [JobStatus.EXPIRED] * 5
    assert statuses[str(jobs[5]["id"])] == JobStatus.SUCCEEDED
    image_url = jobs[0]["images"][0]["url"]  # type: ignore[index]
    assert (await harness.client.get(image_url)).status_code == 404


async def test_unfinished_jobs_never_expire(harness: Harness) -> None:
    auth = await harness.auth()
    job = (await harness.client.post(GENERATE, json={"prompt": "gate:long"}, headers={**auth, **ASYNC})).json()
    await harness.fake.wait_started(1)
    await _age(harness, [job["id"]], 1)
    report = await retention.sweep(
        sessions=harness.app.state.services.sessions,
        storage=harness.app.state.services.storage,
        settings=harness.app.state.services.settings,
    )
    assert report.expired_jobs == 0
    harness.fake.open("gate:long")


async def test_orphans_are_removed_after_the_grace_period(harness: Harness) -> None:
    (job,) = await _make_jobs(harness, 1)
    storage = harness.app.state.services.storage
    await storage.put("images/AAAAAAAAAAAAAAAAAAAAAAAA.png", tiny_png())
    await storage.put("inputs/img_gone/0.png", tiny_png())
    await storage.put("images/BBBBBBBBBBBBBBBBBBBBBBBB.png", tiny_png())
    old = time.time() - 2 * harness.app.state.services.settings.orphan_grace_seconds
    for key in ["images/AAAAAAAAAAAAAAAAAAAAAAAA.png", "inputs/img_gone/0.png"]:
        os.utime(storage.path_for(key), (old, old))
    for image in job["images"]:  # type: ignore[attr-defined]
        os.utime(storage.path_for(f"images/{image['name']}"), (old, old))

    report = await retention.sweep(
        sessions=harness.app.state.services.sessions, storage=storage, settings=harness.app.state.services.settings
    )

    assert report.orphan_files == 2
    assert not storage.path_for("images/AAAAAAAAAAAAAAAAAAAAAAAA.png").exists()
    assert not storage.path_for("inputs/img_gone/0.png").exists()
    assert storage.path_for("images/BBBBBBBBBBBBBBBBBBBBBBBB.png").exists()  # young: maybe still being written
    assert (await harness.client.get(job["images"][0]["url"])).status_code == 200  # type: ignore[index]
