"""FailingStorage: local storage whose writes fail as a full or read-only disk would, while the test says so."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from imagegate.storage.local import LocalStorage


class FailingStorage(LocalStorage):
    """Writes raise OSError(failure) (errno.ENOSPC, errno.EROFS, …) while `failure` is set."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.failure: int | None = None

    def _write(self, handle: BinaryIO, data: bytes | BinaryIO) -> None:
        if self.failure is not None:
            raise OSError(self.failure, os.strerror(self.failure))
        super()._write(handle, data)
