"""Validation of a GenerationRequest, field by field, with no app and no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from imagegate.errors import InvalidRequest
from imagegate.jobs.requests import (
    GenerationRequest,
    Reference,
    parse_size,
    require_storable_text,
    text_problem,
    validate,
)
from imagegate.settings import Settings

SETTINGS = Settings(max_images_per_job=10, max_prompt_chars=100, max_image_side=2048, max_reference_images=2)


def refused(**fields: Any) -> InvalidRequest:
    """The InvalidRequest validate raises for a request with these fields."""
    with pytest.raises(InvalidRequest) as caught:
        validate(GenerationRequest(**{"prompt": "a fox", **fields}), SETTINGS)
    return caught.value


def test_a_good_request_comes_back_normalised() -> None:
    valid = validate(GenerationRequest(prompt="  a fox  ", size="640x480", output_format="jpg", count=3), SETTINGS)
    assert (valid.prompt, valid.size, valid.width, valid.height) == ("a fox", "640x480", 640, 480)
    assert (valid.output_format, valid.count, valid.quality) == ("jpeg", 3, "auto")


def test_auto_size_is_resolved_but_kept_as_asked() -> None:
    valid = validate(GenerationRequest(prompt="x"), SETTINGS)
    assert (valid.size, valid.width, valid.height) == ("auto", 1024, 1024)


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        ({"prompt": " \n "}, "prompt", "prompt must not be empty"),
        ({"prompt": "x" * 101}, "prompt", "prompt is 101 characters; the limit is 100"),
        ({"prompt": "a\x00b"}, "prompt", "NUL character"),
        ({"size": "big"}, "size", "use WIDTHxHEIGHT"),
        ({"size": "15x64"}, "size", "between 16 and 2048 pixels"),
        ({"size": "64x2049"}, "size", "between 16 and 2048 pixels"),
        ({"count": 0}, "count", "count must be between 1 and 10"),
        ({"count": 11}, "count", "count must be between 1 and 10"),
        ({"quality": "ultra"}, "quality", "quality must be one of: auto, low, medium, high, standard, hd"),
        ({"output_format": "bmp"}, "output_format", "output_format must be one of: png, jpeg, webp"),
        ({"references": (Reference(b"", "image[0]"),) * 3}, "image", "3 reference images given; the limit is 2"),
        ({"mask": Reference(b"", "mask")}, "mask", "A mask needs an image to edit"),
    ],
)
def test_each_bad_field_is_named_and_explained(fields: dict[str, Any], param: str, says: str) -> None:
    error = refused(**fields)
    assert error.param == param
    assert says in error.message
    assert error.status == 400


def test_sizes_at_the_bounds_are_accepted() -> None:
    assert parse_size("16x2048", 2048) == (16, 2048)
    assert parse_size("auto", 2048) == (1024, 1024)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("plain", None),
        ({"deep": [["a\x00"]]}, "a NUL character"),
        (["fine", {"key\ud800": 1}], "a lone surrogate (such as \\ud800)"),
    ],
)
def test_text_problems_are_found_however_deep(value: Any, problem: str | None) -> None:
    assert text_problem(value) == problem


def test_unstorable_text_in_a_parameter_names_that_parameter() -> None:
    with pytest.raises(InvalidRequest) as caught:
        require_storable_text(GenerationRequest(prompt="x", params={"user": "bad\ud800"}))
    assert caught.value.param == "user"
    assert "lone surrogate" in caught.value.message
