"""Storage in a local folder: atomic writes by rename, all file work in a thread."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from imagegate.errors import ImagegateError, StorageFull, StorageUnavailable
from imagegate.storage.base import Download, StoreChecks, StoredObject, check_key

logger = logging.getLogger(__name__)
TMP_SUFFIX = ".part"
COPY_CHUNK = 1024 * 1024
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def storage_error(error: OSError, *, action: str, key: str) -> ImagegateError:
    """What callers are told about a failed file operation; the original goes to the log only."""
    logger.error("storage: %s %s failed: %s", action, key, error)
    if error.errno in FULL_ERRNOS:
        return StorageFull()
    return StorageUnavailable()


class LocalStorage(StoreChecks):
    """Objects are files under root; keys map to relative paths and may not escape it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path_for(self, key: str) -> Path:
        """The file for a key; ValueError for keys that are absolute or climb out of the root."""
        return self.root.joinpath(*check_key(key))

    async def put(self, key: str, data: bytes | BinaryIO) -> None:
        """Write to a temporary file beside the target, then rename it into place (StorageFull when full)."""
        await asyncio.to_thread(self.put_blocking, key, data)

    def put_blocking(self, key: str, data: bytes | BinaryIO) -> None:
        """put() in the calling thread, for work already in a worker thread (storage.base.BlockingPut)."""
        path = self.path_for(key)
        try:
            self._put(path, data)
        except OSError as error:
            raise storage_error(error, action="writing", key=key) from None

    def _put(self, path: Path, data: bytes | BinaryIO) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
        try:
            with open(tmp, "wb") as handle:
                self._write(handle, data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _write(self, handle: BinaryIO, data: bytes | BinaryIO) -> None:
        if isinstance(data, bytes):
            handle.write(data)
        else:
            data.seek(0)
            shutil.copyfileobj(data, handle, COPY_CHUNK)

    async def get(self, key: str) -> bytes:
        """Read a whole object (FileNotFoundError when there is none)."""
        try:
            return await asyncio.to_thread(self.path_for(key).read_bytes)
        except FileNotFoundError:
            raise
        except OSError as error:
            raise storage_error(error, action="reading", key=key) from None

    async def stat(self, key: str) -> StoredObject:
        """The file's size and modification time (FileNotFoundError when there is none)."""
        stat = await asyncio.to_thread(os.stat, self.path_for(key))
        return StoredObject(key=key, size=stat.st_size, modified_at=datetime.fromtimestamp(stat.st_mtime, UTC))

    async def open(self, key: str) -> Download:
        """Open the file now (FileNotFoundError when there is none) and read it a chunk at a time in a thread."""
        handle = await asyncio.to_thread(open, self.path_for(key), "rb")
        size = (await asyncio.to_thread(os.fstat, handle.fileno())).st_size
        return Download(size=size, chunks=self._chunks(handle))

    async def _chunks(self, handle: BinaryIO) -> AsyncIterator[bytes]:
        try:
            while chunk := await asyncio.to_thread(handle.read, COPY_CHUNK):
                yield chunk
        finally:
            await asyncio.to_thread(handle.close)

    async def delete(self, key: str) -> bool:
        """Remove an object and any folder it leaves empty below the root."""
        return await asyncio.to_thread(self._delete, self.path_for(key))

    def _delete(self, path: Path) -> bool:
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        parent = path.parent
        while parent != self.root and parent.is_relative_to(self.root):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
        return True

    async def delete_many(self, keys: Sequence[str]) -> int:
        """Remove the files one by one, each tried even when another fails; how many there were."""
        removed, failure = 0, None
        for key in keys:
            try:
                removed += await self.delete(key)
            except OSError as error:
                failure = failure or error
        if failure is not None:
            raise failure
        return removed

    async def list(self, prefix: str) -> AsyncIterator[StoredObject]:
        """Objects under prefix, read a directory at a time in a thread."""
        base = self.path_for(prefix.strip("/")) if prefix.strip("/") else self.root
        batches = await asyncio.to_thread(lambda: list(self._walk(base)))
        for item in batches:
            yield item

    def _walk(self, base: Path) -> Iterator[StoredObject]:
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                path = Path(dirpath, name)
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                yield StoredObject(
                    key=path.relative_to(self.root).as_posix(),
                    size=stat.st_size,
                    modified_at=datetime.fromtimestamp(stat.st_mtime, UTC),
                )

    async def presign(self, key: str, expires_in: timedelta) -> str | None:
        """Local files have no URL of their own: ImageGate serves them."""
        return None

    def describe(self) -> str:
        """The folder."""
        return f"local folder {self.root}"

    def local_path(self, key: str) -> Path | None:
        """Local files are served directly."""
        return self.path_for(key)
