"""The headless Chromium the browser tests drive: Debian's, with nothing of its own reaching the network."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """Debian's Chromium (installed by the test set-up); never a downloaded browser."""
    found = os.environ.get("IMAGEGATE_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError("Chromium is needed for the browser tests: install Debian's 'chromium' package")
    return found


@contextmanager
def launched_chromium() -> Iterator[Browser]:
    """A headless Chromium, closed when the block ends (a browser test module's fixture holds one)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield launched
        launched.close()
