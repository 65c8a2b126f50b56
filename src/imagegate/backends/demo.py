"""The offline demo backend: deterministic pictures from the prompt, reference images blended in."""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
from collections.abc import Mapping
from typing import Any

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps
from pydantic import BaseModel, Field

from imagegate.backends.base import (
    BackendRequest,
    BackendResult,
    InputImage,
    JobReporter,
    OutputImage,
    RequestShape,
    VisionRequest,
)
from imagegate.settings import Settings

PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
# Plain colour words and the colours that stand for them (the nearest one names a pixel).
COLOUR_WORDS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (220, 20, 20)),
    ("red", (255, 0, 0)),
    ("green", (0, 128, 0)),
    ("green", (0, 255, 0)),
    ("blue", (0, 0, 255)),
    ("blue", (30, 90, 200)),
    ("yellow", (255, 255, 0)),
    ("orange", (255, 140, 0)),
    ("purple", (128, 0, 128)),
    ("pink", (255, 170, 200)),
    ("brown", (120, 70, 20)),
    ("cyan", (0, 255, 255)),
    ("magenta", (255, 0, 255)),
    ("white", (255, 255, 255)),
    ("gray", (128, 128, 128)),
    ("black", (0, 0, 0)),
)
SAMPLE_SIDE = 48


class DemoOptions(BaseModel):
    """Options of the demo backend."""

    model_config = {"extra": "forbid"}

    delay_seconds: float = Field(default=0.0, ge=0, description="Simulated latency per job (benchmarks).")


class DemoBackend:
    """Makes images without credentials or network: same prompt and parameters, same image."""

    def __init__(self, *, name: str, options: Mapping[str, Any], settings: Settings) -> None:
        self.name = name
        self.options = DemoOptions.model_validate(dict(options))

    def check(self, request: RequestShape) -> None:
        """The demo backend can draw anything the common validation lets through."""

    async def generate(self, request: BackendRequest, reporter: JobReporter) -> BackendResult:
        """Render request.count images in a thread (after the configured delay, if any)."""
        if self.options.delay_seconds:
            await asyncio.sleep(self.options.delay_seconds)
        reporter.write(f"demo: rendering {request.count} image(s) at {request.width}x{request.height}\n")
        images = []
        for index in range(request.count):
            final = await asyncio.to_thread(render, request, index)
            for step in range(_partial_count(request)):
                reporter.partial_image(step, await asyncio.to_thread(blurred, final, request.output_format, step))
            images.append(OutputImage(final))
        return BackendResult(images=images, metadata={"revised_prompt": None})

    async def describe(self, request: VisionRequest, reporter: JobReporter) -> str:
        """Offline and deterministic: each image's size and its dominant colour as a plain word."""
        lines = []
        for index, image in enumerate(request.images):
            colour = await asyncio.to_thread(dominant_colour, image.data)
            lines.append(f"Image {index + 1}: {image.width}x{image.height} pixels, mostly {colour}.")
        reporter.write(f"demo: described {len(request.images)} image(s)\n")
        return "\n".join(lines)

    async def sweep(self) -> int:
        """Nothing of its own to clean."""
        return 0

    async def aclose(self) -> None:
        """Nothing to release."""


def render(request: BackendRequest, index: int) -> bytes:
    """One deterministic image for the request, encoded in its output format."""
    seed = hashlib.sha256(
        "\x1f".join(
            [
                request.model,
                request.prompt,
                str(request.width),
                str(request.height),
                request.quality,
                str(index),
            ]
        ).encode()
    ).digest()
    rng = random.Random(seed)  # noqa: S311 - pictures, not secrets
    image = _background(request.width, request.height, seed)
    _shapes(image, rng)
    if request.references:
        image = Image.blend(image, _collage(request.references, image.size), 0.6)
    _caption(image, request.prompt)
    return _encode(image, request.output_format)


def dominant_colour(data: bytes) -> str:
    """The colour word most of the image's pixels are nearest to."""
    with Image.open(io.BytesIO(data)) as source:
        sample = source.convert("RGB").resize((SAMPLE_SIDE, SAMPLE_SIDE), Image.Resampling.NEAREST)
    votes: dict[str, int] = {}
    colours = sample.getcolors(SAMPLE_SIDE * SAMPLE_SIDE) or []
    for count, pixel in colours:
        assert isinstance(pixel, tuple)  # an RGB image's colours are tuples
        word = _nearest_word((pixel[0], pixel[1], pixel[2]))
        votes[word] = votes.get(word, 0) + count
    return max(sorted(votes), key=lambda word: votes[word])


def _nearest_word(pixel: tuple[int, int, int]) -> str:
    return min(COLOUR_WORDS, key=lambda item: sum((a - b) ** 2 for a, b in zip(item[1], pixel, strict=True)))[0]


def _partial_count(request: BackendRequest) -> int:
    value = request.params.get("partial_images", 0)
    return value if isinstance(value, int) and 0 < value <= 3 else 0


def blurred(data: bytes, output_format: str, step: int) -> bytes:
    """A preview of a finished image, blurrier for earlier steps (what a partial image looks like)."""
    with Image.open(io.BytesIO(data)) as image:
        preview = image.convert("RGB").filter(ImageFilter.GaussianBlur(radius=12 / (step + 1)))
    return _encode(preview, output_format)


def _background(width: int, height: int, seed: bytes) -> Image.Image:
    gradient = Image.linear_gradient("L")  # 256x256
    if width <= gradient.width and height <= gradient.height:  # shrunk first: fewer pixels to turn
        gradient = gradient.resize((width, height), Image.Resampling.BILINEAR).rotate(seed[6] % 360)
    else:
        gradient = gradient.rotate(seed[6] % 360).resize((width, height))
    start = Image.new("RGB", (width, height), (seed[0], seed[1], seed[2]))
    end = Image.new("RGB", (width, height), (seed[3], seed[4], seed[5]))
    return Image.composite(end, start, gradient)


def _shapes(image: Image.Image, rng: random.Random) -> None:
    draw = ImageDraw.Draw(image, "RGBA")
    width, height = image.size
    for _ in range(8):
        x, y = rng.randrange(width), rng.randrange(height)
        radius = rng.randrange(max(width, height) // 12 + 1, max(width, height) // 3 + 2)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256), 140)
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)


def _collage(references: tuple[InputImage, ...], size: tuple[int, int]) -> Image.Image:
    """The references side by side, cropped to fill the canvas: visibly what the caller sent."""
    canvas = Image.new("RGB", size)
    width, height = size
    strip = max(width // len(references), 1)
    for position, reference in enumerate(references):
        with Image.open(io.BytesIO(reference.data)) as source:
            tile = ImageOps.fit(source.convert("RGB"), (strip, height))
        canvas.paste(tile, (position * strip, 0))
    return canvas


def _caption(image: Image.Image, prompt: str) -> None:
    width, height = image.size
    if width < 96 or height < 48:
        return
    font = ImageFont.load_default(size=max(10, min(width, height) // 24))
    text = prompt if len(prompt) <= 60 else prompt[:57] + "..."
    draw = ImageDraw.Draw(image, "RGBA")
    box = draw.textbbox((0, 0), text, font=font)
    pad = 6
    top = height - (box[3] - box[1]) - 3 * pad
    draw.rectangle((0, top, width, height), fill=(0, 0, 0, 120))
    draw.text((pad, top + pad), text, fill=(255, 255, 255, 255), font=font)


def _encode(image: Image.Image, output_format: str) -> bytes:
    buffer = io.BytesIO()
    pil_format = PIL_FORMATS[output_format]
    # PNG at zlib's fastest level: a demo picture is small, and the encode was most of its render.
    options: dict[str, Any] = {"quality": 90} if pil_format in ("JPEG", "WEBP") else {"compress_level": 1}
    image.save(buffer, format=pil_format, **options)
    return buffer.getvalue()
