"""FakeBackend: a backend whose behaviour each test scripts through the prompt.

Prompts starting with 'fail:', 'crash:', 'garbage:', 'empty:' or 'gate:' fail cleanly, raise an unexpected
exception, return non-image bytes, return nothing, or wait until the test opens that prompt's gate;
'file:<path>' waits until that file exists (a gate another process can open). It reads images too
(describe), by the same prefixes.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from imagegate.backends.base import BackendRequest, BackendResult, JobReporter, OutputImage, VisionRequest
from imagegate.errors import BackendError, InvalidRequest
from imagegate.settings import Settings

FILE_GATE_POLL_SECONDS = 0.05
SECRET_IN_ERROR = "sk-upstream-secret /srv/private/path"


def tiny_png(colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (8, 8)) -> bytes:
    """A small valid PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


class FakeBackend:
    """Records what it was asked, in order, and behaves as the prompt says."""

    def __init__(self, *, name: str, options: Mapping[str, Any], settings: Settings) -> None:
        self.name = name
        self.requests: list[BackendRequest] = []
        self.vision_requests: list[VisionRequest] = []
        self.started: list[str] = []
        self.running = 0
        self.max_running = 0
        self._gates: dict[str, asyncio.Event] = {}
        self._changed = asyncio.Condition()
        self.closed = False

    def gate(self, prompt: str) -> asyncio.Event:
        """The event a 'gate:' prompt waits on."""
        return self._gates.setdefault(prompt, asyncio.Event())

    def open(self, prompt: str) -> None:
        """Let the job with this prompt finish."""
        self.gate(prompt).set()

    async def wait_started(self, count: int, timeout: float = 10.0) -> None:
        """Wait until `count` jobs have started."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.started) >= count)

    def check(self, request: BackendRequest) -> None:
        """Refuse prompts starting with 'unsupported:' before anything is queued."""
        if request.prompt.startswith("unsupported:"):
            raise InvalidRequest("The fake backend cannot do that.", param="prompt")

    async def generate(self, request: BackendRequest, reporter: JobReporter) -> BackendResult:
        """Behave as the prompt's prefix says."""
        self.requests.append(request)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        async with self._changed:
            self.started.append(request.prompt)
            self._changed.notify_all()
        try:
            return await self._behave(request, reporter)
        finally:
            self.running -= 1

    async def _behave(self, request: BackendRequest, reporter: JobReporter) -> BackendResult:
        prompt = request.prompt
        reporter.write(f"fake: {prompt}\n")
        if prompt.startswith("gate:"):
            await self.gate(prompt).wait()
        if prompt.startswith("file:"):
            gate = Path(prompt.removeprefix("file:"))
            while not await asyncio.to_thread(gate.exists):
                await asyncio.sleep(FILE_GATE_POLL_SECONDS)
        if prompt.startswith("fail:"):
            raise BackendError("The fake backend refused this prompt.")
        if prompt.startswith("crash:"):
            raise RuntimeError(f"unexpected failure with {SECRET_IN_ERROR}")
        if prompt.startswith("garbage:"):
            return BackendResult(images=[OutputImage(b"this is not an image")])
        if prompt.startswith("empty:"):
            return BackendResult(images=[])
        images = [OutputImage(tiny_png(size=(request.width, request.height))) for _ in range(request.count)]
        return BackendResult(images=images, metadata={"revised_prompt": prompt.upper()})

    async def describe(self, request: VisionRequest, reporter: JobReporter) -> str:
        """Read images as the prompt says (gate:, fail:, crash:, empty:); counts as running like a job."""
        self.vision_requests.append(request)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        async with self._changed:
            self.started.append(request.prompt)
            self._changed.notify_all()
        try:
            prompt = request.prompt
            reporter.usage("fake-account", "success")
            if prompt.startswith("gate:"):
                await self.gate(prompt).wait()
            if prompt.startswith("fail:"):
                raise BackendError("The fake backend could not read these images.")
            if prompt.startswith("crash:"):
                raise RuntimeError(f"unexpected failure with {SECRET_IN_ERROR}")
            if prompt.startswith("empty:"):
                return "  "
            return f"fake: {len(request.images)} image(s) about {prompt!r}"
        finally:
            self.running -= 1

    async def sweep(self) -> int:
        """Nothing of its own to clean."""
        return 0

    async def aclose(self) -> None:
        """Remember that it was closed."""
        self.closed = True
