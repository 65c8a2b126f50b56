"""Where image bytes live: the Storage protocol and its implementations."""

from imagegate.storage.base import Storage, StoredObject
from imagegate.storage.local import LocalStorage

__all__ = ["LocalStorage", "Storage", "StoredObject"]
