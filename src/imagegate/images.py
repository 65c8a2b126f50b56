"""Image bytes: decode base64 input, check that bytes really are an image, describe them."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import secrets
import warnings
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from imagegate.errors import InvalidImage, InvalidRequest

FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "GIF": "gif"}
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}
OUTPUT_FORMATS = ("png", "jpeg", "webp")
DATA_URL = re.compile(r"^data:image/[a-zA-Z0-9.+-]+;base64,", re.ASCII)
# Refuse decompression bombs: no input may claim more pixels than this.
MAX_PIXELS = 64 * 1024 * 1024
# Output images get names of this many random bytes, in URL-safe base64 without its padding (24 characters).
OUTPUT_NAME_BYTES = 18
OUTPUT_NAME_CHARS = -(-OUTPUT_NAME_BYTES * 4 // 3)
# Images imported from codex-image-service keep their own names (img_<id>.png), up to this many characters.
IMPORTED_NAME_MAX_CHARS = 76
SERVED_NAME_MAX_CHARS = max(OUTPUT_NAME_CHARS, IMPORTED_NAME_MAX_CHARS)
SERVED_NAME = re.compile(rf"^[A-Za-z0-9_-]{{1,{SERVED_NAME_MAX_CHARS}}}\.(png|jpe?g|webp|gif)$")


@dataclass(frozen=True)
class ImageInfo:
    """What we record about stored image bytes."""

    width: int
    height: int
    format: str
    bytes: int
    sha256: str


def new_output_name(image_format: str) -> str:
    """A fresh, unguessable file name for an output image (one that SERVED_NAME accepts)."""
    return f"{secrets.token_urlsafe(OUTPUT_NAME_BYTES)}.{image_format}"


def decode_base64(value: str, *, param: str) -> bytes:
    """Bytes from plain base64 or a data: URL; InvalidRequest naming the field otherwise."""
    payload = DATA_URL.sub("", value.strip(), count=1)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{param} is not valid base64 (plain base64 or a data: URL).", param=param) from None


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, read without decoding its pixels."""

    width: int
    height: int
    format: str

    @property
    def pixels(self) -> int:
        """Width times height."""
        return self.width * self.height


def read_header(data: bytes | BinaryIO, *, param: str = "image") -> ImageHeader:
    """The format and size from the header only (no pixel is decoded; call in a thread); else InvalidImage."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    source.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                fmt = FORMATS.get(image.format or "")
                if fmt is None:
                    raise InvalidImage(f"{param} is a {image.format} image; use PNG, JPEG, WebP or GIF.", param=param)
                return ImageHeader(image.size[0], image.size[1], fmt)
    except InvalidImage:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError, Warning):
        raise InvalidImage(f"{param} is not a readable image (PNG, JPEG, WebP or GIF).", param=param) from None
    finally:
        source.seek(0)


def inspect_image(data: bytes | BinaryIO, *, param: str = "image", max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Check the header against max_pixels, then decode fully (CPU work: call in a thread); else InvalidImage."""
    header = read_header(data, param=param)
    if header.pixels > max_pixels:
        raise InvalidImage(f"{param} is too large ({header.width}x{header.height} pixels).", param=param)
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    source.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError, Warning):
        raise InvalidImage(f"{param} is not a readable image (PNG, JPEG, WebP or GIF).", param=param) from None
    size, digest = _measure(source)
    return ImageInfo(header.width, header.height, header.format, size, digest)


def check_output(data: bytes, *, param: str = "output", max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """A backend's image judged without decoding its pixels: header, pixel bound, complete stream (call in a thread).

    The header gives the format and size; no image may claim more than max_pixels, so nothing we or a caller
    decode later can be a decompression bomb; and the stream must end as its format ends, so a truncated
    answer is refused. Decoding every pixel of every output would cost more than everything else a job does.
    """
    header = read_header(data, param=param)
    if header.pixels > max_pixels:
        raise InvalidImage(f"{param} is too large ({header.width}x{header.height} pixels).", param=param)
    if not _ends_whole(data, header.format):
        raise InvalidImage(f"{param} is truncated: its {header.format} data does not end as it should.", param=param)
    return ImageInfo(header.width, header.height, header.format, len(data), hashlib.sha256(data).hexdigest())


PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
JPEG_END = b"\xff\xd9"
GIF_END = b";"


def _ends_whole(data: bytes, image_format: str) -> bool:
    """Whether the bytes end where the format says its stream ends (trailing zero padding allowed)."""
    if image_format == "png":
        return data.endswith(PNG_END)
    if image_format == "webp":
        declared = int.from_bytes(data[4:8], "little") + 8
        return len(data) >= declared
    tail = data.rstrip(b"\x00")
    return tail.endswith(JPEG_END if image_format == "jpeg" else GIF_END)


def sha256_of(data: bytes | BinaryIO) -> str:
    """SHA-256 of bytes or of a file's whole content (read a chunk at a time; call in a thread)."""
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    return _measure(data)[1]


def _measure(source: BinaryIO) -> tuple[int, str]:
    """Length and SHA-256, read a chunk at a time."""
    source.seek(0)
    digest, size = hashlib.sha256(), 0
    while chunk := source.read(1024 * 1024):
        digest.update(chunk)
        size += len(chunk)
    source.seek(0)
    return size, digest.hexdigest()
