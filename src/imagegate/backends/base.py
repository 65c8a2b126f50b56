"""The Backend protocol and the values that cross it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from imagegate.settings import Settings


@dataclass(frozen=True)
class InputImage:
    """A reference image handed to a backend (edit mode)."""

    data: bytes
    width: int
    height: int
    format: str


@dataclass(frozen=True)
class BackendRequest:
    """What a backend is asked to make; sizes are already parsed and validated."""

    job_id: str
    model: str
    prompt: str
    width: int
    height: int
    quality: str
    output_format: str
    count: int
    size: str = "auto"  # as requested: 'auto' or 'WIDTHxHEIGHT' (width and height hold the resolved numbers)
    references: tuple[InputImage, ...] = ()
    mask: InputImage | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_edit(self) -> bool:
        """True when reference images were given."""
        return bool(self.references)


@dataclass(frozen=True)
class OutputImage:
    """One image a backend made, as encoded bytes."""

    data: bytes


@dataclass
class BackendResult:
    """A backend's answer: the images, and anything worth recording on the job."""

    images: list[OutputImage]
    metadata: dict[str, Any] = field(default_factory=dict)


PartialListener = Callable[[int, bytes], None]


@dataclass(frozen=True)
class UsageEvent:
    """One use of an upstream resource (a Codex account, say), kept for per-resource statistics."""

    subject: str
    outcome: str  # "success", "failure", "quota", "timeout", …
    images: int
    at: datetime


class JobLog:
    """A backend's channel back for one job: its log (bounded, kept for the admin history) and partial images."""

    def __init__(self, max_bytes: int, on_partial: PartialListener | None = None) -> None:
        self._max = max_bytes
        self._parts: list[str] = []
        self._size = 0
        self._on_partial = on_partial
        self.truncated = False
        self.usage_events: list[UsageEvent] = []

    def usage(self, subject: str, outcome: str, images: int = 0) -> None:
        """Record one use of a resource (e.g. an account) and how it went; the job run stores it."""
        self.usage_events.append(UsageEvent(subject, outcome, images, datetime.now(UTC)))

    def partial_image(self, index: int, data: bytes) -> None:
        """Hand on a partial (preview) image while the final one is still being made; streams show it."""
        if self._on_partial is not None:
            self._on_partial(index, data)

    def write(self, text: str) -> None:
        """Append text; past the bound, the rest is dropped and the log says so."""
        if self.truncated:
            return
        encoded = len(text.encode("utf-8", "replace"))
        if self._size + encoded > self._max:
            room = max(self._max - self._size, 0)
            self._parts.append(text.encode("utf-8", "replace")[:room].decode("utf-8", "ignore"))
            self._parts.append("\n[log truncated]\n")
            self.truncated = True
            return
        self._parts.append(text)
        self._size += encoded

    def text(self) -> str:
        """Everything written so far."""
        return "".join(self._parts)


class Backend(Protocol):
    """What makes pixels. Built once per configured backend by create_app."""

    name: str

    def check(self, request: BackendRequest) -> None:
        """Raise InvalidRequest for what this backend cannot do, before the job is queued or paid for.

        The references carry their sizes and formats here; their bytes may be empty (uploads stay on disk).
        """
        ...

    async def generate(self, request: BackendRequest, log: JobLog) -> BackendResult:
        """Make request.count images (or fewer, saying why in the log); raise ImagegateError on failure."""
        ...

    async def sweep(self) -> int:
        """Remove the backend's own leftovers past their age (called by retention); returns how many."""
        ...

    async def aclose(self) -> None:
        """Release what the backend holds (clients, processes)."""
        ...


class BackendFactory(Protocol):
    """A backend class: built with its configured name, its options and the settings."""

    def __call__(self, *, name: str, options: Mapping[str, Any], settings: Settings) -> Backend:
        """Build the backend; raise ValueError for bad options."""
        ...
