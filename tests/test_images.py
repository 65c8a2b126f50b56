"""Output images: the names we give are the names we serve; what a backend made is checked without decoding it."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from imagegate.errors import InvalidImage
from imagegate.images import (
    OUTPUT_FORMATS,
    OUTPUT_NAME_CHARS,
    SERVED_NAME,
    ImageInfo,
    check_output,
    new_output_name,
)


@pytest.mark.parametrize("image_format", OUTPUT_FORMATS)
def test_every_new_output_name_is_one_the_file_route_serves(image_format: str) -> None:
    name = new_output_name(image_format)
    stem, _, suffix = name.partition(".")
    assert (len(stem), suffix) == (OUTPUT_NAME_CHARS, image_format)
    assert SERVED_NAME.match(name) is not None


def test_names_longer_than_any_we_give_or_import_are_refused() -> None:
    assert SERVED_NAME.match("a" * 76 + ".png") is not None
    assert SERVED_NAME.match("a" * 77 + ".png") is None


def _encoded(image_format: str, size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buffer, format=image_format.upper())
    return buffer.getvalue()


@pytest.mark.parametrize("image_format", ["png", "jpeg", "webp", "gif"])
def test_an_output_is_judged_from_its_header_and_its_end(image_format: str) -> None:
    data = _encoded(image_format)
    assert check_output(data) == ImageInfo(40, 30, image_format, len(data), hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize("image_format", ["png", "jpeg", "webp", "gif"])
def test_a_truncated_output_is_refused(image_format: str) -> None:
    data = _encoded(image_format)
    with pytest.raises(InvalidImage, match=r"truncated|not a readable"):  # WebP: Pillow reads it all at open
        check_output(data[:-3], param="output[0]")


def test_an_output_claiming_more_pixels_than_allowed_is_refused_undecoded() -> None:
    data = _encoded("png", (300, 200))
    with pytest.raises(InvalidImage, match="too large"):
        check_output(data, max_pixels=300 * 200 - 1)


def test_bytes_that_are_no_image_are_refused() -> None:
    with pytest.raises(InvalidImage):
        check_output(b"this is not an image")
