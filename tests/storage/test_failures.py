"""A full or read-only storage is said as a storage error on every surface; the original error is only logged."""

from __future__ import annotations

import base64
import errno
import logging
from collections.abc import AsyncIterator

import pytest

from imagegate import app as app_module
from imagegate.settings import Settings
from tests.fakes.backends import tiny_png
from tests.fakes.storage import FailingStorage
from tests.helpers import Harness, start


@pytest.fixture
async def failing(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Harness, FailingStorage]]:
    storage = FailingStorage(settings.data_dir / "files")
    monkeypatch.setattr(app_module, "storage_for", lambda _settings: storage)
    async for harness in start(settings):
        yield harness, storage


async def test_a_full_disk_refuses_an_upload_with_507(
    failing: tuple[Harness, FailingStorage], caplog: pytest.LogCaptureFixture
) -> None:
    harness, storage = failing
    storage.failure = errno.ENOSPC
    reference = base64.b64encode(tiny_png()).decode()
    with caplog.at_level(logging.ERROR):
        response = await harness.client.post(
            "/v1/images/generate",
            json={"prompt": "x", "reference_images_base64": [reference]},
            headers=await harness.auth(),
        )
    assert response.status_code == 507, response.text
    assert response.json()["error"]["code"] == "storage_full"
    assert "No space left" not in response.text
    assert "inputs/" not in response.text
    assert "No space left on device" in caplog.text  # the operator still sees what happened
    listed = await harness.client.get("/v1/images/jobs", headers=await harness.auth())
    assert listed.json()["data"] == []


async def test_outputs_that_cannot_be_written_fail_the_job_as_storage_not_backend(
    failing: tuple[Harness, FailingStorage],
) -> None:
    harness, storage = failing
    storage.failure = errno.EROFS
    headers = await harness.auth()
    native = await harness.client.post("/v1/images/generate", json={"prompt": "x"}, headers=headers)
    assert native.status_code == 503, native.text
    assert native.json()["error_code"] == "storage_unavailable"
    assert "Read-only" not in native.text
    openai = await harness.client.post("/v1/images/generations", json={"prompt": "x"}, headers=headers)
    assert openai.status_code == 503, openai.text
    assert openai.json()["error"]["code"] == "storage_unavailable"

    storage.failure = None  # the disk is writable again: the same request works
    again = await harness.client.post("/v1/images/generate", json={"prompt": "x"}, headers=headers)
    assert again.status_code == 200, again.text


async def test_openai_edit_upload_to_a_full_disk_is_507(failing: tuple[Harness, FailingStorage]) -> None:
    harness, storage = failing
    storage.failure = errno.ENOSPC
    response = await harness.client.post(
        "/v1/images/edits",
        data={"prompt": "x"},
        files={"image": ("a.png", tiny_png(), "image/png")},
        headers=await harness.auth(),
    )
    assert response.status_code == 507, response.text
    assert response.json()["error"]["code"] == "storage_full"
