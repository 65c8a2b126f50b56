"""GenerationRequest: what every surface translates its request into, and its validation."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, BinaryIO

from imagegate.backends.base import Operation
from imagegate.errors import InvalidRequest
from imagegate.images import OUTPUT_FORMATS
from imagegate.settings import Settings

SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
AUTO_SIZE = (1024, 1024)
MIN_SIDE = 16
QUALITIES = ("auto", "low", "medium", "high", "standard", "hd")
FORMAT_ALIASES = {"jpg": "jpeg"}


@dataclass(frozen=True)
class Reference:
    """An input image as received: its bytes, or an open file holding them (an upload spooled to disk is never
    read into memory whole); param names its field in the caller's request for errors."""

    data: bytes | BinaryIO
    param: str

    @property
    def size(self) -> int:
        """Its length in bytes."""
        if isinstance(self.data, bytes):
            return len(self.data)
        self.data.seek(0, os.SEEK_END)
        size = self.data.tell()
        self.data.seek(0)
        return size


@dataclass(frozen=True)
class GenerationRequest:
    """A surface-independent image request."""

    prompt: str
    model: str | None = None
    size: str = "auto"
    quality: str = "auto"
    count: int = 1
    output_format: str = "png"
    references: tuple[Reference, ...] = ()
    mask: Reference | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    surface: str = "native"  # the API surface it came through, shown in the history
    # Body fields of surfaces that have them; the Imagegate-Webhook-* headers apply otherwise.
    webhook_url: str | None = None
    webhook_events: list[str] | str | None = None
    operation: Operation | None = None  # None: an edit when references are given, else a generation

    def __post_init__(self) -> None:
        # A copy behind a read-only view: the surface's dict cannot change the request once it is made.
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def resolved_operation(self) -> Operation:
        """The operation asked for, or the one the references imply."""
        if self.operation is not None:
            return self.operation
        return Operation.EDIT if self.references else Operation.GENERATE


@dataclass(frozen=True)
class ValidRequest:
    """A GenerationRequest after validation: size parsed, format normalised."""

    prompt: str
    size: str
    width: int
    height: int
    quality: str
    count: int
    output_format: str


def require_storable_text(request: GenerationRequest) -> None:
    """InvalidRequest for a NUL or a lone surrogate in any text field (neither can be stored or logged as UTF-8)."""
    fields: dict[str, Any] = {
        "prompt": request.prompt,
        "model": request.model,
        "size": request.size,
        "quality": request.quality,
        "output_format": request.output_format,
        **request.params,
    }
    for param, value in fields.items():
        problem = text_problem([param, value])
        if problem:
            name = param.encode("utf-8", "backslashreplace").decode("utf-8")
            raise InvalidRequest(f"{name} contains {problem}; send valid UTF-8 text without it.", param=name)


def text_problem(value: Any) -> str | None:
    """What makes a value unstorable as text (looking inside lists and objects), or None when it is fine."""
    pending = [value]
    while pending:  # a loop, not recursion: parsed JSON may nest deeper than the stack
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "a NUL character"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "a lone surrogate (such as \\ud800)"
        elif isinstance(item, dict):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple):
            pending += item
    return None


def validate(request: GenerationRequest, settings: Settings) -> ValidRequest:
    """Check everything that does not need I/O; InvalidRequest says which field and what to change."""
    prompt = check_prompt(request.prompt, settings)
    width, height = parse_size(request.size, settings.max_image_side)
    if not 1 <= request.count <= settings.max_images_per_job:
        raise InvalidRequest(f"count must be between 1 and {settings.max_images_per_job}.", param="count")
    if request.quality not in QUALITIES:
        raise InvalidRequest(f"quality must be one of: {', '.join(QUALITIES)}.", param="quality")
    output_format = FORMAT_ALIASES.get(request.output_format, request.output_format)
    if output_format not in OUTPUT_FORMATS:
        raise InvalidRequest(f"output_format must be one of: {', '.join(OUTPUT_FORMATS)}.", param="output_format")
    if len(request.references) > settings.max_reference_images:
        raise InvalidRequest(
            f"{len(request.references)} reference images given; the limit is {settings.max_reference_images}.",
            param=request.references[0].param.split("[")[0] if request.references else "references",
        )
    if request.mask is not None and not request.references:
        raise InvalidRequest("A mask needs an image to edit; send the image too.", param=request.mask.param)
    size = "auto" if request.size == "auto" else f"{width}x{height}"
    return ValidRequest(prompt, size, width, height, request.quality, request.count, output_format)


def check_prompt(prompt: str, settings: Settings) -> str:
    """The prompt without surrounding space; InvalidRequest when empty, too long or holding a NUL."""
    prompt = prompt.strip()
    if not prompt:
        raise InvalidRequest("prompt must not be empty.", param="prompt")
    if "\x00" in prompt:
        raise InvalidRequest("prompt contains a NUL character; remove it.", param="prompt")
    if len(prompt) > settings.max_prompt_chars:
        raise InvalidRequest(
            f"prompt is {len(prompt)} characters; the limit is {settings.max_prompt_chars}.", param="prompt"
        )
    return prompt


def parse_size(size: str, max_side: int) -> tuple[int, int]:
    """'WIDTHxHEIGHT' (or 'auto') to integers within [16, max_side]."""
    if size == "auto":
        return AUTO_SIZE
    match = SIZE.match(size)
    if not match:
        raise InvalidRequest(f"size {size!r} is malformed; use WIDTHxHEIGHT such as 1024x1024, or auto.", param="size")
    width, height = int(match[1]), int(match[2])
    if not (MIN_SIDE <= width <= max_side and MIN_SIDE <= height <= max_side):
        raise InvalidRequest(
            f"size {size} is out of range; each side must be between {MIN_SIDE} and {max_side} pixels.",
            param="size",
        )
    return width, height
