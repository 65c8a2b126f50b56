"""Where image bytes live: the Storage protocol and its implementations."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imagegate.storage.base import Download, Storage, StoredObject
from imagegate.storage.local import LocalStorage
from imagegate.storage.location import LocalLocation, Location, S3Location, parse_storage_url

if TYPE_CHECKING:
    from imagegate.settings import Settings

__all__ = ["Download", "LocalStorage", "Storage", "StoredObject", "storage_at", "storage_for"]


def storage_for(settings: Settings) -> Storage:
    """The configured storage: IMAGEGATE_STORAGE_URL, else files under <data_dir>/files."""
    location = parse_storage_url(settings.storage_url)
    return storage_at(location or LocalLocation(settings.data_dir / "files"))


def storage_at(location: Location) -> Storage:
    """The store at a location (obstore is imported only for an s3:// one)."""
    if isinstance(location, S3Location):
        from imagegate.storage.s3 import S3Storage

        return S3Storage(location)
    return LocalStorage(location.root)
