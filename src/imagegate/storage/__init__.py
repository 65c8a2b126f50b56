"""Where image bytes live: the Storage protocol and its implementations."""

from imagegate.settings import Settings
from imagegate.storage.base import Storage, StoredObject
from imagegate.storage.local import LocalStorage

__all__ = ["LocalStorage", "Storage", "StoredObject", "storage_for"]


def storage_for(settings: Settings) -> Storage:
    """The configured storage: files under <data_dir>/files."""
    return LocalStorage(settings.data_dir / "files")
