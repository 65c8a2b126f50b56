"""The FakeBackend ImageGate's tests script through the prompt; it lives in imagegate.testing for backend authors."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imagegate.backends.base import BackendRequest, BackendResult, JobReporter
from imagegate.settings import Settings
from imagegate.testing import SECRET_IN_ERROR, FakeBackend, tiny_png

__all__ = ["SECRET_IN_ERROR", "FakeBackend", "RecordingBackend", "runs_of", "tiny_png"]


class RecordingBackend(FakeBackend):
    """A FakeBackend that leaves a file per run in options['runs']: `<job id>.<options['host']>.<random>`."""

    def __init__(self, *, name: str, options: Mapping[str, Any], settings: Settings) -> None:
        super().__init__(name=name, options=options, settings=settings)
        self.runs = Path(options["runs"])
        self.host = str(options["host"])

    async def generate(self, request: BackendRequest, reporter: JobReporter) -> BackendResult:
        """Record this run (before it starts, so a run cut off is counted too), then behave as FakeBackend."""
        marker = self.runs / f"{request.job_id}.{self.host}.{secrets.token_hex(4)}"
        await asyncio.to_thread(marker.touch)
        return await super().generate(request, reporter)


def runs_of(folder: Path) -> dict[str, list[str]]:
    """What RecordingBackends recorded in the folder: each job's runs, as the hosts that ran them."""
    runs: dict[str, list[str]] = {}
    for marker in folder.iterdir():
        job_id, host, _ = marker.name.split(".")
        runs.setdefault(job_id, []).append(host)
    return runs
