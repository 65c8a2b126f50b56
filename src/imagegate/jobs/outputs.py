"""A run's output images: checked, written to storage, and their provider base64 kept briefly for the answer."""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from typing import cast

from imagegate.backends.base import OutputImage
from imagegate.errors import BackendError, ImagegateError
from imagegate.images import ImageInfo, check_output, new_output_name
from imagegate.jobs.queue import StoredImage
from imagegate.storage import Storage
from imagegate.storage.base import BlockingPut

# The base64 texts kept for answers not yet rendered, in characters (oldest dropped first).
RECENT_MAX_CHARS = 64 * 1024 * 1024


class RecentOutputs:
    """The provider's base64 of images this process just stored, by storage key, bounded in total size.

    A synchronous answer in base64 sends back the very text the provider sent instead of reading the file and
    encoding it again. What was dropped, or stored by another process, is read from storage as before.
    """

    def __init__(self, max_chars: int = RECENT_MAX_CHARS) -> None:
        self._max = max_chars
        self._texts: OrderedDict[str, str] = OrderedDict()
        self._chars = 0

    def remember(self, key: str, text: str) -> None:
        """Keep the text of the object stored under key (unless it alone exceeds the bound)."""
        if len(text) > self._max:
            return
        self.forget(key)
        self._texts[key] = text
        self._chars += len(text)
        while self._chars > self._max:
            _, dropped = self._texts.popitem(last=False)
            self._chars -= len(dropped)

    def take(self, key: str) -> str | None:
        """The text kept for key, no longer kept; None when there is none."""
        text = self._texts.pop(key, None)
        if text is not None:
            self._chars -= len(text)
        return text

    def forget(self, key: str) -> None:
        """Drop what is kept for key."""
        self.take(key)


async def store(images: list[OutputImage], *, storage: Storage, recent: RecentOutputs) -> list[StoredImage]:
    """Check each image from its header, write it under a fresh name; on any failure remove what was written."""
    stored: list[StoredImage] = []
    try:
        for index, image in enumerate(images):
            one = await _store_one(image.data, index, storage)
            stored.append(one)
            if image.b64 is not None:
                recent.remember(one.storage_key, image.b64)
    except BaseException:
        await discard(stored, storage=storage, recent=recent)
        raise
    return stored


async def _store_one(data: bytes, index: int, storage: Storage) -> StoredImage:
    """One output checked and written: one thread step where the store's write blocks (local files), else two."""
    if _blocks(type(storage)):
        return await asyncio.to_thread(_check_and_put, data, index, cast(BlockingPut, storage))
    info = await asyncio.to_thread(_checked, data, index)
    name = new_output_name(info.format)
    await storage.put(f"images/{name}", data)
    return StoredImage(name, f"images/{name}", info)


@functools.cache
def _blocks(store: type) -> bool:
    # Asked once per class: an isinstance() check against a runtime Protocol walks its members every time.
    return issubclass(store, BlockingPut)


def _check_and_put(data: bytes, index: int, storage: BlockingPut) -> StoredImage:
    info = _checked(data, index)
    name = new_output_name(info.format)
    storage.put_blocking(f"images/{name}", data)
    return StoredImage(name, f"images/{name}", info)


def _checked(data: bytes, index: int) -> ImageInfo:
    """The output's header and hash (call in a thread); BackendError when the bytes are not a whole image."""
    try:
        return check_output(data, param=f"output[{index}]")
    except ImagegateError:
        raise BackendError("The backend returned bytes that are not an image.") from None


async def discard(stored: list[StoredImage], *, storage: Storage, recent: RecentOutputs) -> None:
    """Remove images written for a run whose result was not recorded."""
    for image in stored:
        recent.forget(image.storage_key)
        await storage.delete(image.storage_key)
