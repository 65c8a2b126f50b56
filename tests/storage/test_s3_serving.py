"""An app on S3 storage: jobs through every surface store, serve and expire their images in the bucket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx2
import pytest
from sqlalchemy import update

from imagegate import retention
from imagegate.db import utcnow
from imagegate.jobs.models import Job
from tests.fakes.backends import tiny_png
from tests.fakes.s3 import S3Server
from tests.helpers import GENERATE, Harness, HarnessFactory, b64, login

PREFIX = "gate/files"
MODELS = {"fake-model": "fake", "dall-e-3": "fake"}  # dall-e-3: what openai-image-gen clients ask for
pytestmark = pytest.mark.usefixtures("s3_credentials")


@pytest.fixture
async def on_s3(harness_with: HarnessFactory, s3: S3Server, bucket: str) -> AsyncIterator[Harness]:
    """The app storing in a fresh bucket under a prefix."""
    async with harness_with(storage_url=s3.url(bucket, PREFIX), models=MODELS) as running:
        yield running


@pytest.fixture
async def presigning(harness_with: HarnessFactory, s3: S3Server, bucket: str) -> AsyncIterator[Harness]:
    """The same, with downloads redirected to presigned URLs."""
    async with harness_with(storage_url=s3.url(bucket, PREFIX), storage_presign=True, models=MODELS) as running:
        yield running


async def _sweep(harness: Harness, now: datetime | None = None) -> retention.SweepReport:
    state = harness.app.state.services
    return await retention.sweep(sessions=state.sessions, storage=state.storage, settings=state.settings, now=now)


async def test_a_native_job_is_stored_in_the_bucket_served_from_it_and_expired_from_it(
    on_s3: Harness, s3: S3Server, bucket: str
) -> None:
    auth = await on_s3.auth()
    job = (
        await on_s3.client.post(GENERATE, json={"prompt": "x", "reference_image_base64": b64(tiny_png())}, headers=auth)
    ).json()
    assert job["status"] == "succeeded", job
    name = job["images"][0]["name"]
    images, inputs = sorted(s3.keys(bucket))
    assert images == f"{PREFIX}/images/{name}"
    assert inputs.startswith(f"{PREFIX}/inputs/{job['id']}/")
    assert not (on_s3.app.state.services.settings.data_dir / "files").exists()  # nothing on local disk

    image = await on_s3.client.get(job["images"][0]["url"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")
    assert image.headers["content-length"] == str(len(image.content))
    head = await on_s3.client.head(job["images"][0]["url"])
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == str(len(image.content))
    assert head.headers["etag"] == image.headers["etag"]
    cached = await on_s3.client.get(job["images"][0]["url"], headers={"If-None-Match": image.headers["etag"]})
    assert cached.status_code == 304

    async with on_s3.app.state.services.sessions() as session, session.begin():
        await session.execute(update(Job).where(Job.id == job["id"]).values(expires_at=utcnow() - timedelta(days=1)))
    report = await _sweep(on_s3)
    assert (report.expired_jobs, report.deleted_files, report.errors) == (1, 2, [])
    assert s3.keys(bucket) == []
    gone = await on_s3.client.get(job["images"][0]["url"])
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "not_found"
    assert (await on_s3.client.head(job["images"][0]["url"])).status_code == 404


async def test_an_edit_reads_its_input_from_the_bucket(on_s3: Harness) -> None:
    response = await on_s3.client.post(
        "/v1/images/edits",
        data={"prompt": "edit me", "response_format": "b64_json"},
        files={"image": ("a.png", tiny_png(), "image/png")},
        headers=await on_s3.auth(),
    )
    assert response.status_code == 200, response.text
    (request,) = on_s3.fake.requests
    assert [image.data for image in request.references] == [tiny_png()]
    assert response.json()["data"][0]["b64_json"]


async def test_orphans_in_the_bucket_are_swept_and_referenced_objects_kept(
    on_s3: Harness, s3: S3Server, bucket: str
) -> None:
    job = (await on_s3.client.post(GENERATE, json={"prompt": "keep"}, headers=await on_s3.auth())).json()
    storage = on_s3.app.state.services.storage
    await storage.put("images/AAAAAAAAAAAAAAAAAAAAAAAA.png", tiny_png())
    await storage.put("inputs/img_gone/0.png", tiny_png())
    young = await _sweep(on_s3)
    assert young.orphan_files == 0  # within the grace period: maybe a request still being accepted
    later = utcnow() + timedelta(seconds=on_s3.app.state.services.settings.orphan_grace_seconds + 60)
    report = await _sweep(on_s3, now=later)
    assert (report.orphan_files, report.expired_jobs) == (2, 0)
    assert s3.keys(bucket) == [f"{PREFIX}/images/{job['images'][0]['name']}"]
    assert (await on_s3.client.get(job["images"][0]["url"])).status_code == 200


async def test_the_openai_image_gen_download_streams_from_the_bucket(on_s3: Harness) -> None:
    headers = await on_s3.auth()
    body = (await on_s3.client.post("/generate", json={"prompt": "lake"}, headers=headers)).json()
    image = await on_s3.client.get(body["images"][0]["url"], headers=headers)
    assert image.status_code == 200
    assert image.content.startswith(b"\x89PNG")
    other = await on_s3.client.get(body["images"][0]["url"], headers=await on_s3.auth("someone-else"))
    assert other.status_code == 404


async def test_ready_writes_to_the_bucket_and_the_status_page_names_it(on_s3: Harness, bucket: str) -> None:
    ready = await on_s3.client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["storage"] == "ok"
    await login(on_s3.client)
    status = await on_s3.client.get("/admin/status")
    assert f"S3 bucket s3://{bucket}/{PREFIX}?endpoint=" in status.text


async def test_ready_is_503_when_the_bucket_is_gone(harness_with: HarnessFactory, s3: S3Server) -> None:
    async with harness_with(storage_url=s3.url("never-created", PREFIX)) as running:
        ready = await running.client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["storage"] == "unwritable"


async def test_presigned_downloads_redirect_after_the_same_checks(presigning: Harness, s3: S3Server) -> None:
    headers = await presigning.auth()
    job = (await presigning.client.post(GENERATE, json={"prompt": "x"}, headers=headers)).json()
    url = job["images"][0]["url"]
    redirect = await presigning.client.get(url)
    assert redirect.status_code == 307
    assert redirect.headers["cache-control"] == "no-store"
    location = redirect.headers["location"]
    assert location.startswith(f"{s3.endpoint}/")
    assert "X-Amz-Expires=300" in location
    async with httpx2.AsyncClient() as client:
        direct = await client.get(location)
    assert direct.status_code == 200
    assert direct.headers["content-type"] == "image/png"
    assert direct.content.startswith(b"\x89PNG")

    head = await presigning.client.head(url)  # answered here, as before: a presigned GET URL takes no HEAD
    assert (head.status_code, head.headers["content-length"]) == (200, str(len(direct.content)))
    cached = await presigning.client.get(url, headers={"If-None-Match": head.headers["etag"]})
    assert cached.status_code == 304
    missing = await presigning.client.get("/generated/" + "x" * 24 + ".png")
    assert missing.status_code == 404  # our 404, not a redirect to the store's
    assert missing.json()["error"]["code"] == "not_found"

    body = (await presigning.client.post("/generate", json={"prompt": "lake"}, headers=headers)).json()
    legacy = await presigning.client.get(body["images"][0]["url"], headers=headers)
    assert legacy.status_code == 307
    assert urlsplit(legacy.headers["location"]).netloc == urlsplit(s3.endpoint).netloc
    refused = await presigning.client.get(body["images"][0]["url"], headers=await presigning.auth("other"))
    assert refused.status_code == 404  # authorization first: another key's image is not redirected to
