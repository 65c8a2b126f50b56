"""The Backend protocol and the values that cross it."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from imagegate.settings import Settings

if TYPE_CHECKING:
    import typer

    from imagegate.backends.store import BackendStore


class Operation(enum.StrEnum):
    """What a request asks of a backend."""

    GENERATE = "generate"
    EDIT = "edit"
    VARIATION = "variation"


@dataclass(frozen=True, kw_only=True)
class ImageShape:
    """An input image as check() sees it: its size and format (its bytes stay in storage until the job runs)."""

    width: int
    height: int
    format: str


@dataclass(frozen=True, kw_only=True)
class InputImage(ImageShape):
    """A reference image handed to a backend (edit mode), with its bytes."""

    data: bytes


@dataclass(frozen=True, kw_only=True)
class RequestShape:
    """What a backend's check() judges: the request as generate() will get it, without the inputs' bytes.

    Sizes are already parsed and validated; params is read-only.
    """

    model: str
    prompt: str
    operation: Operation
    width: int
    height: int
    quality: str
    output_format: str
    count: int
    size: str = "auto"  # as requested: 'auto' or 'WIDTHxHEIGHT' (width and height hold the resolved numbers)
    references: tuple[ImageShape, ...] = ()
    mask: ImageShape | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A copy behind a read-only view: neither the caller's dict nor a backend can change it afterwards.
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def is_edit(self) -> bool:
        """True when reference images were given."""
        return bool(self.references)


@dataclass(frozen=True, kw_only=True)
class BackendRequest(RequestShape):
    """What a backend is asked to make: the request's shape, the job it runs for, and the inputs' bytes."""

    job_id: str
    references: tuple[InputImage, ...] = ()
    mask: InputImage | None = None


@dataclass(frozen=True)
class OutputImage:
    """One image a backend made, as encoded bytes."""

    data: bytes
    # The provider's base64 of exactly these bytes, when it sent base64: answers in base64 reuse it as it is.
    b64: str | None = None


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


class JobReporter:
    """A backend's channel back while it runs a job.

    Its log (bounded, kept for the admin history), the upstream resources it used (for usage statistics) and
    partial images (relayed to streaming requests).
    """

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


@dataclass(frozen=True)
class VisionRequest:
    """What a backend is asked to read (POST /v1/vision): a prompt about one or more checked images."""

    request_id: str
    model: str
    prompt: str
    images: tuple[InputImage, ...]


class Describer(Protocol):
    """The optional read side of a backend: a backend that can answer questions about images has describe()."""

    async def describe(self, request: VisionRequest, reporter: JobReporter) -> str:
        """The model's final answer about the images; raise ImagegateError on failure (never return nothing)."""
        ...


def describer(backend: Backend) -> Describer | None:
    """The backend's describe operation, or None when it has none (or says so with `can_describe = False`)."""
    if not callable(getattr(backend, "describe", None)) or not getattr(backend, "can_describe", True):
        return None
    return cast(Describer, backend)


def sizes_of(backend: Backend, model: str) -> tuple[str, ...] | None:
    """The sizes the backend makes for a model (an optional `sizes(model)` method); None: any WIDTHxHEIGHT within
    the service's limits, and auto."""
    sizes = getattr(backend, "sizes", None)
    if not callable(sizes):
        return None
    listed = sizes(model)
    return None if listed is None else tuple(listed)


class Backend(Protocol):
    """What makes pixels. BackendSet.from_settings builds one per configured backend, through its BackendFactory.

    A backend may also have the optional hooks: Describer (it reads images), UsesStore, HasAdminPanel and
    HasCliCommands, defined below; the app uses each one a backend has, built-in or third-party alike.
    """

    name: str

    def check(self, request: RequestShape) -> None:
        """Raise InvalidRequest for what this backend cannot do, before the job is queued or paid for.

        It sees the inputs' sizes and formats, not their bytes (uploads stay on disk until the job runs).
        """
        ...

    async def generate(self, request: BackendRequest, reporter: JobReporter) -> BackendResult:
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


# Optional hooks: a backend (built-in or third-party) has any of these methods, and the app uses them.


@runtime_checkable
class UsesStore(Protocol):
    """A backend that keeps state in the database (settings, rests, events), shared by every process."""

    async def start(self, store: BackendStore) -> None:
        """Called once the database is open, before the first job and before any panel or command runs."""
        ...


@dataclass(frozen=True)
class PanelRequest:
    """What an admin panel is given: links under the app's prefix, the CSRF token its forms carry, the form."""

    url: Callable[[str], str]
    action_url: Callable[[str], str]
    csrf: str
    form: Mapping[str, str] = field(default_factory=dict)


PanelRender = Callable[[PanelRequest], Awaitable[str]]


@dataclass(frozen=True)
class AdminPanel:
    """A page of the admin UI a backend contributes: its nav title, its HTML body, and its form actions.

    render returns HTML (the backend escapes what it shows); each action handles a POST (the admin checked
    the session and CSRF token already) and returns the message shown on the next page.
    """

    title: str
    render: PanelRender
    actions: Mapping[str, PanelRender] = field(default_factory=dict)


@runtime_checkable
class HasAdminPanel(Protocol):
    """A backend with a page in the admin UI, under /admin/backends/<backend name>."""

    def admin_panel(self) -> AdminPanel:
        """The panel; called once when the app starts."""
        ...


@runtime_checkable
class HasCliCommands(Protocol):
    """A backend type with its own `imagegate <name> …` commands (a class-level hook: no backend is built)."""

    @classmethod
    def cli_commands(cls) -> tuple[str, typer.Typer]:
        """The command group's name and its Typer app."""
        ...
