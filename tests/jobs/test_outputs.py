"""A run's outputs: stored under fresh names, the provider's base64 kept (bounded) for the answer, undone on failure."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from imagegate.backends.base import OutputImage
from imagegate.errors import BackendError
from imagegate.jobs.outputs import RecentOutputs, discard, store
from imagegate.storage import LocalStorage
from tests.fakes.backends import tiny_png


def test_kept_texts_stay_within_their_bound_oldest_dropped_first() -> None:
    recent = RecentOutputs(max_chars=10)
    recent.remember("a", "1234")
    recent.remember("b", "5678")
    recent.remember("c", "90ab")
    assert recent.take("a") is None
    assert (recent.take("b"), recent.take("c")) == ("5678", "90ab")
    assert recent.take("b") is None  # taken once


def test_a_text_larger_than_the_bound_is_not_kept() -> None:
    recent = RecentOutputs(max_chars=3)
    recent.remember("a", "1234")
    assert recent.take("a") is None


async def test_stored_outputs_keep_the_providers_base64_until_discarded(tmp_path: Path) -> None:
    storage, recent = LocalStorage(tmp_path), RecentOutputs()
    png = tiny_png(size=(16, 12))
    text = base64.b64encode(png).decode()
    stored = await store([OutputImage(png, b64=text), OutputImage(png)], storage=storage, recent=recent)
    assert [(image.info.width, image.info.height, image.info.format) for image in stored] == [(16, 12, "png")] * 2
    assert await storage.get(stored[0].storage_key) == png
    assert recent.take(stored[1].storage_key) is None  # no base64 came with it
    await discard(stored, storage=storage, recent=recent)
    assert recent.take(stored[0].storage_key) is None
    with pytest.raises(FileNotFoundError):
        await storage.get(stored[0].storage_key)


async def test_a_truncated_output_fails_the_run_and_leaves_nothing_stored(tmp_path: Path) -> None:
    storage, recent = LocalStorage(tmp_path), RecentOutputs()
    png = tiny_png()
    with pytest.raises(BackendError, match="not an image"):
        await store([OutputImage(png), OutputImage(png[:-4])], storage=storage, recent=recent)
    assert [item async for item in storage.list("images")] == []
