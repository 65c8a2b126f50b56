"""The demo backend: deterministic, honours size, count and format, and visibly uses references."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from imagegate.backends.base import BackendRequest, InputImage, JobReporter, Operation
from imagegate.backends.demo import DemoBackend
from imagegate.settings import Settings
from imagegate.testing import run_backend_contract
from tests.fakes.backends import tiny_png


def _backend(tmp_path: Path) -> DemoBackend:
    return DemoBackend(name="demo", options={}, settings=Settings(data_dir=tmp_path))


def _request(**overrides: object) -> BackendRequest:
    values: dict[str, object] = {
        "job_id": "img_x",
        "model": "demo",
        "prompt": "a lighthouse at dusk",
        "operation": Operation.GENERATE,
        "width": 96,
        "height": 64,
        "quality": "auto",
        "output_format": "png",
        "count": 1,
    }
    values.update(overrides)
    return BackendRequest(**values)  # type: ignore[arg-type]


async def _images(tmp_path: Path, **overrides: object) -> list[Image.Image]:
    result = await _backend(tmp_path).generate(_request(**overrides), JobReporter(4096))
    return [Image.open(io.BytesIO(image.data)) for image in result.images]


async def test_same_request_same_bytes_different_prompt_different_image(tmp_path: Path) -> None:
    backend = _backend(tmp_path)
    first = await backend.generate(_request(), JobReporter(4096))
    second = await backend.generate(_request(), JobReporter(4096))
    other = await backend.generate(_request(prompt="a different scene"), JobReporter(4096))
    assert first.images[0].data == second.images[0].data
    assert first.images[0].data != other.images[0].data


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
async def test_size_count_and_format_are_honoured(tmp_path: Path, fmt: str) -> None:
    images = await _images(tmp_path, width=120, height=48, count=3, output_format=fmt)
    assert [(i.size, i.format) for i in images] == [((120, 48), fmt.upper())] * 3
    assert len({i.tobytes() for i in images}) == 3


async def test_edit_mode_blends_the_references_in(tmp_path: Path) -> None:
    red = InputImage(data=tiny_png((255, 0, 0), (32, 32)), width=32, height=32, format="png")
    blue = InputImage(data=tiny_png((0, 0, 255), (32, 32)), width=32, height=32, format="png")
    (plain,) = await _images(tmp_path, width=64, height=32)
    (edited,) = await _images(tmp_path, width=64, height=32, references=(red, blue))
    left, right = edited.convert("RGB").getpixel((4, 4)), edited.convert("RGB").getpixel((60, 4))
    assert isinstance(left, tuple)
    assert isinstance(right, tuple)
    assert left[0] > left[2]  # red reference on the left
    assert right[2] > right[0]  # blue reference on the right
    assert plain.tobytes() != edited.tobytes()


def test_unknown_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="delay"):
        DemoBackend(name="demo", options={"delay": 1}, settings=Settings(data_dir=tmp_path))


async def test_the_demo_backend_keeps_the_backend_contract(tmp_path: Path) -> None:
    await run_backend_contract(_backend(tmp_path))
