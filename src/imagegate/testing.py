"""Helpers for testing ImageGate and the backends written for it.

- run_backend_contract(backend) checks that a backend keeps the Backend protocol's promises.
- FakeBackend is a backend scripted through the prompt (type "imagegate.testing:FakeBackend").
- cheap_password_hashing() makes test runs hash admin passwords in microseconds; never use it in production.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher, profiles
from PIL import Image

from imagegate.admin import password
from imagegate.backends.base import (
    Backend,
    BackendRequest,
    BackendResult,
    JobReporter,
    Operation,
    OutputImage,
    RequestShape,
    VisionRequest,
)
from imagegate.errors import BackendError, ImagegateError, InvalidRequest
from imagegate.settings import Settings

PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
REPORTER_BYTES = 64 * 1024


class BackendContractError(AssertionError):
    """A backend broke a promise of the Backend protocol; the message says which, and for which request."""


def contract_request(
    *,
    prompt: str = "a red lighthouse on a cliff at dusk",
    width: int = 64,
    height: int = 64,
    output_format: str = "png",
    count: int = 1,
    model: str = "contract-model",
    quality: str = "auto",
) -> BackendRequest:
    """A request as ImageGate hands it to a backend after validation (no reference images)."""
    size = f"{width}x{height}"
    return BackendRequest(
        job_id="img_contract00000000000000",
        model=model,
        prompt=prompt,
        operation=Operation.GENERATE,
        width=width,
        height=height,
        quality=quality,
        output_format=output_format,
        count=count,
        size=size,
    )


DEFAULT_REQUESTS = (
    contract_request(),
    contract_request(width=96, height=48, output_format="jpeg", count=2),
    contract_request(width=48, height=80, output_format="webp"),
)


async def run_backend_contract(
    backend: Backend,
    *,
    accepted: Sequence[BackendRequest] = DEFAULT_REQUESTS,
    refused: Sequence[BackendRequest] = (),
    failing: Sequence[BackendRequest] = (),
) -> None:
    """Check the backend against the Backend protocol; BackendContractError names the first promise broken.

    accepted: requests check() lets through and generate() fulfils with request.count images (or fewer, saying
    why in the log) of the requested size and format. refused: requests check() refuses with an InvalidRequest
    (a 4xx ImagegateError) before anything is queued. failing: requests generate() fails with an
    ImagegateError, never another exception. Then sweep() returns a count and aclose() releases the backend.
    """
    _require(isinstance(getattr(backend, "name", None), str), "the backend has no name (a str attribute)")
    for request in refused:
        _expect_refusal(backend, request)
    for request in accepted:
        await _expect_images(backend, request)
    for request in failing:
        await _expect_failure(backend, request)
    swept = await backend.sweep()
    _require(isinstance(swept, int) and swept >= 0, f"sweep() returned {swept!r}, not a count")
    await backend.aclose()


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise BackendContractError(message)


def _describe(request: BackendRequest) -> str:
    return f"{request.count} x {request.width}x{request.height} {request.output_format} for {request.prompt!r}"


def _expect_refusal(backend: Backend, request: BackendRequest) -> None:
    try:
        backend.check(request)
    except ImagegateError as error:
        _require(400 <= error.status < 500, f"check() refused {_describe(request)} with a {error.status}, not a 4xx")
        _require(bool(error.message), f"check() refused {_describe(request)} without saying why")
        return
    raise BackendContractError(f"check() let {_describe(request)} through; it should raise InvalidRequest")


async def _expect_images(backend: Backend, request: BackendRequest) -> None:
    try:
        backend.check(request)
    except ImagegateError as error:
        raise BackendContractError(f"check() refused {_describe(request)}: {error.message}") from error
    reporter = JobReporter(REPORTER_BYTES)
    result = await backend.generate(request, reporter)
    _require(isinstance(result, BackendResult), f"generate() returned {type(result).__name__}, not a BackendResult")
    made = len(result.images)
    _require(1 <= made <= request.count, f"generate() made {made} image(s) for {_describe(request)}")
    _require(made == request.count or bool(reporter.text()), f"{made} of {request.count} image(s), the log silent")
    for index, image in enumerate(result.images):
        found = await asyncio.to_thread(_read_image, image.data)
        wanted = (request.width, request.height, PIL_FORMATS[request.output_format])
        _require(found == wanted, f"image {index} for {_describe(request)} is {found}, not {wanted}")


def _read_image(data: bytes) -> tuple[int, int, str] | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.width, image.height, str(image.format)
    except (OSError, SyntaxError, ValueError):
        return None


async def _expect_failure(backend: Backend, request: BackendRequest) -> None:
    try:
        await backend.generate(request, JobReporter(REPORTER_BYTES))
    except ImagegateError:
        return
    except Exception as error:
        raise BackendContractError(
            f"generate() failed {_describe(request)} with {type(error).__name__}, not an ImagegateError"
        ) from error
    raise BackendContractError(f"generate() fulfilled {_describe(request)}; it was expected to fail")


@contextmanager
def cheap_password_hashing() -> Iterator[None]:
    """Hash admin passwords with argon2's cheapest parameters meanwhile: for test runs only, never in production."""
    production = password.HASHER
    password.HASHER = PasswordHasher.from_parameters(profiles.CHEAPEST)
    try:
        yield
    finally:
        password.HASHER = production


# FakeBackend: a backend whose behaviour each test scripts through the prompt.
#
# Prompts starting with 'fail:', 'crash:', 'garbage:', 'empty:' or 'gate:' fail cleanly, raise an unexpected
# exception, return non-image bytes, return nothing, or wait until the test opens that prompt's gate;
# 'file:<path>' waits until that file exists (a gate another process can open). It reads images too
# (describe), by the same prefixes. Its images are PNGs of the requested size, whatever the format asked. Its option
# `usage`, when set, is the token usage it reports with every image job, as the OpenAI backend reports tokens.

FILE_GATE_POLL_SECONDS = 0.05
SECRET_IN_ERROR = "sk-upstream-secret /srv/private/path"  # noqa: S105 - bait: no answer may ever show it


def tiny_png(colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (8, 8)) -> bytes:
    """A small valid PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


class FakeBackend:
    """Records what it was asked, in order, and behaves as the prompt says (see the comment above)."""

    def __init__(self, *, name: str, options: Mapping[str, Any], settings: Settings) -> None:
        self.name = name
        self.requests: list[BackendRequest] = []
        self.checked: list[RequestShape] = []
        self.vision_requests: list[VisionRequest] = []
        self.started: list[str] = []
        self.running = 0
        self.max_running = 0
        self._gates: dict[str, asyncio.Event] = {}
        self._changed = asyncio.Condition()
        self.closed = False
        self.usage: Mapping[str, Any] | None = options.get("usage")

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

    def check(self, request: RequestShape) -> None:
        """Refuse prompts starting with 'unsupported:' before anything is queued."""
        self.checked.append(request)
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
            while not await asyncio.to_thread(gate.exists):  # noqa: ASYNC110 - another process opens this gate
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
        usage = {"usage": dict(self.usage)} if self.usage else {}
        return BackendResult(images=images, metadata={"revised_prompt": prompt.upper(), **usage})

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
