"""Output image names: the names we give are the names we serve."""

from __future__ import annotations

import pytest

from imagegate.images import OUTPUT_FORMATS, OUTPUT_NAME_CHARS, SERVED_NAME, new_output_name


@pytest.mark.parametrize("image_format", OUTPUT_FORMATS)
def test_every_new_output_name_is_one_the_file_route_serves(image_format: str) -> None:
    name = new_output_name(image_format)
    stem, _, suffix = name.partition(".")
    assert (len(stem), suffix) == (OUTPUT_NAME_CHARS, image_format)
    assert SERVED_NAME.match(name) is not None


def test_names_longer_than_any_we_give_or_import_are_refused() -> None:
    assert SERVED_NAME.match("a" * 76 + ".png") is not None
    assert SERVED_NAME.match("a" * 77 + ".png") is None
