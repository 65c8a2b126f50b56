"""Storage in an S3-compatible bucket (AWS S3, MinIO, R2, …) through obstore; every call is async, none blocks."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from imagegate.errors import StorageUnavailable
from imagegate.images import CONTENT_TYPES
from imagegate.storage.base import Download, StoreChecks, StoredObject, check_key, check_prefix
from imagegate.storage.location import S3Location

if TYPE_CHECKING:
    from obstore import Attributes
    from obstore.store import ClientConfig, RetryConfig, S3Config, S3Store

logger = logging.getLogger(__name__)
T = TypeVar("T")
# Read by obstore itself from the environment; the *_FILE variants (Docker secrets) are read here.
CREDENTIAL_VARIABLES = {
    "AWS_ACCESS_KEY_ID": "access_key_id",
    "AWS_SECRET_ACCESS_KEY": "secret_access_key",
    "AWS_SESSION_TOKEN": "session_token",
}
DELETE_BATCH = 1000  # S3's DeleteObjects takes at most 1000 keys
LIST_CHUNK = 1000
READ_CHUNK = 1024 * 1024
# A store that does not answer fails a request in seconds, not obstore's default of minutes of retries.
RETRY: RetryConfig = {"max_retries": 3, "retry_timeout": timedelta(seconds=20)}
CLIENT: ClientConfig = {"connect_timeout": "5s", "timeout": "60s"}


def credentials_from_files(environ: Mapping[str, str]) -> dict[str, str]:
    """AWS_*_FILE secrets, for the variables that are not set themselves; ValueError naming an unreadable file."""
    found: dict[str, str] = {}
    for variable, option in CREDENTIAL_VARIABLES.items():
        path = environ.get(f"{variable}_FILE")
        if environ.get(variable) or not path:
            continue
        try:
            found[option] = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"{variable}_FILE: cannot read {path}: {exc.strerror}") from None
    return found


def _missing_obstore() -> ValueError:
    return ValueError("an s3:// IMAGEGATE_STORAGE_URL needs the obstore package: pip install obstore")


class S3Storage(StoreChecks):
    """Objects under the location's prefix; keys are checked as on local disk, so both stores hold the same keys."""

    def __init__(self, location: S3Location) -> None:
        try:
            from obstore.store import S3Store
        except ImportError:
            raise _missing_obstore() from None
        self.location = location
        config: S3Config = {}
        if location.endpoint:
            config["endpoint"] = location.endpoint
        if location.region:
            config["region"] = location.region
        config.update(credentials_from_files(os.environ))  # type: ignore[typeddict-item]
        endpoint = location.endpoint or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT") or ""
        client: ClientConfig = {**CLIENT, "allow_http": endpoint.startswith("http://")}
        self._store: S3Store = S3Store(
            location.bucket,
            prefix=location.prefix or None,
            config=config,
            client_options=client,
            retry_config=RETRY,
        )

    async def _call(self, action: str, key: str, call: Awaitable[T], *, reading: bool = False) -> T:
        """Await an obstore call; what fails is logged and said as StorageUnavailable, except a missing object
        when reading (obstore also says a missing bucket as FileNotFoundError: a write must not pass it on)."""
        try:
            return await call
        except StopAsyncIteration:
            raise
        except FileNotFoundError as error:
            if reading:
                raise
            logger.error("storage: %s %s in %s failed: %s", action, key, self.describe(), error)
            raise StorageUnavailable() from None
        except Exception as error:  # obstore raises its own errors and built-in ones (OSError, ValueError, …)
            logger.error("storage: %s %s in %s failed: %s", action, key, self.describe(), error)
            raise StorageUnavailable() from None

    async def put(self, key: str, data: bytes | BinaryIO) -> None:
        """One atomic PUT, or a multipart upload read from the file a part at a time."""
        import obstore

        check_key(key)
        if not isinstance(data, bytes):
            data.seek(0)
        await self._call("writing", key, obstore.put_async(self._store, key, data, attributes=_attributes(key)))

    async def get(self, key: str) -> bytes:
        """The whole object (FileNotFoundError when there is none)."""
        import obstore

        check_key(key)
        result = await self._call("reading", key, obstore.get_async(self._store, key), reading=True)
        return bytes(await self._call("reading", key, result.bytes_async()))

    async def stat(self, key: str) -> StoredObject:
        """A HEAD request."""
        import obstore

        check_key(key)
        meta = await self._call("reading", key, obstore.head_async(self._store, key), reading=True)
        return StoredObject(key=key, size=meta["size"], modified_at=meta["last_modified"])

    async def open(self, key: str) -> Download:
        """One GET whose body is read as the caller takes the chunks."""
        import obstore

        check_key(key)
        result = await self._call("reading", key, obstore.get_async(self._store, key), reading=True)
        return Download(size=result.meta["size"], chunks=self._chunks(key, result.stream(READ_CHUNK)))

    async def _chunks(self, key: str, stream: AsyncIterator[object]) -> AsyncIterator[bytes]:
        iterator = aiter(stream)
        while True:
            try:
                chunk = await self._call("reading", key, anext(iterator))
            except StopAsyncIteration:
                return
            yield bytes(chunk)  # type: ignore[call-overload]

    async def delete(self, key: str) -> bool:
        """Remove one object; True when it was there (S3's DELETE itself does not say)."""
        try:
            await self.stat(key)
        except FileNotFoundError:
            return False
        await self.delete_many([key])
        return True

    async def delete_many(self, keys: Sequence[str]) -> int:
        """DeleteObjects, up to 1000 keys a request; every key counts as removed (S3 does not say which were)."""
        import obstore

        for key in keys:
            check_key(key)
        for start in range(0, len(keys), DELETE_BATCH):
            batch = list(keys[start : start + DELETE_BATCH])
            await self._call("deleting", batch[0], obstore.delete_async(self._store, batch))
        return len(keys)

    async def list(self, prefix: str) -> AsyncIterator[StoredObject]:
        """Objects under prefix, a page of up to 1000 at a time."""
        import obstore

        stripped = check_prefix(prefix).strip("/")
        pages = aiter(obstore.list(self._store, stripped or None, chunk_size=LIST_CHUNK))
        while True:
            try:
                page = await self._call("listing", prefix or "/", anext(pages))
            except StopAsyncIteration:
                return
            for meta in page:
                yield StoredObject(key=meta["path"], size=meta["size"], modified_at=meta["last_modified"])

    async def presign(self, key: str, expires_in: timedelta) -> str | None:
        """A presigned GET URL, signed here without a request to the store."""
        import obstore

        check_key(key)
        return await self._call("signing", key, obstore.sign_async(self._store, "GET", key, expires_in))

    def describe(self) -> str:
        """The bucket, prefix and endpoint (credentials never appear in the URL)."""
        return f"S3 bucket {self.location.url()}"

    def local_path(self, key: str) -> Path | None:
        """Objects are not on local disk."""
        return None


def _attributes(key: str) -> Attributes:
    """A Content-Type for images, so that presigned URLs serve them as ImageGate would."""
    suffix = key.rsplit(".", 1)[-1].lower() if "." in key else ""
    content_type = CONTENT_TYPES.get("jpeg" if suffix == "jpg" else suffix)
    return {"Content-Type": content_type} if content_type else {}
