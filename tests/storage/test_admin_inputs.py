"""The admin UI's job-input page streams the stored object, on local disk and in an S3 bucket alike."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from imagegate.jobs import queries
from imagegate.services import services_of
from tests.fakes.backends import tiny_png
from tests.helpers import GENERATE, Harness, HarnessFactory, b64, login


@pytest.fixture(params=["local", "s3"])
async def on_store(request: pytest.FixtureRequest, harness_with: HarnessFactory) -> AsyncIterator[Harness]:
    """The app on local storage, or on a prefix in a fresh bucket of the test's S3 server."""
    overrides: dict[str, str] = {}
    if request.param == "s3":
        request.getfixturevalue("s3_credentials")
        server = request.getfixturevalue("s3")
        overrides["storage_url"] = server.url(server.new_bucket(), "gate/files")
    async with harness_with(**overrides) as running:
        yield running


async def _edit_job(harness: Harness, image: bytes) -> str:
    auth = await harness.auth()
    body = {"prompt": "x", "reference_image_base64": b64(image)}
    job = (await harness.client.post(GENERATE, json=body, headers=auth)).json()
    assert job["status"] == "succeeded", job
    return str(job["id"])


async def test_a_jobs_input_is_streamed_to_the_admin_with_its_type_and_length(
    on_store: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tiny_png(size=(16, 16))
    job_id = await _edit_job(on_store, image)
    storage = services_of(on_store.app).storage

    async def read_whole(key: str) -> bytes:
        raise AssertionError(f"read {key} whole instead of streaming it")

    monkeypatch.setattr(storage, "get", read_whole)
    await login(on_store.client)
    url = f"/admin/jobs/{job_id}/inputs/0"
    answer = await on_store.client.get(url)
    assert answer.status_code == 200
    assert answer.content == image
    assert answer.headers["content-type"] == "image/png"
    assert answer.headers["content-length"] == str(len(image))
    head = await on_store.client.head(url)
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-type"] == "image/png"
    assert head.headers["content-length"] == str(len(image))


async def test_a_jobs_input_is_for_admins_only_and_a_missing_one_is_a_404(on_store: Harness) -> None:
    job_id = await _edit_job(on_store, tiny_png())
    url = f"/admin/jobs/{job_id}/inputs/0"
    for method in ("GET", "HEAD"):
        refused = await on_store.client.request(method, url)
        assert refused.status_code == 303, method
        assert refused.headers["location"].startswith("/admin/login"), method
    await login(on_store.client)
    assert (await on_store.client.get(f"/admin/jobs/{job_id}/inputs/7")).status_code == 404
    async with services_of(on_store.app).sessions() as session:
        job = await queries.any_job(session, job_id)
    assert job is not None
    await services_of(on_store.app).storage.delete(job.inputs[0].storage_key)
    gone = await on_store.client.get(url)
    assert gone.status_code == 404
    assert "inputs/" not in gone.text
