"""Estimated spend: reported token usage priced per million tokens of each kind."""

from __future__ import annotations

import pytest

from imagegate.jobs import spend
from imagegate.settings import ModelPrice, Settings

PRICE = ModelPrice(input_text=5.0, input_image=10.0, output_image=40.0)
USAGE = {
    "input_tokens": 300,
    "output_tokens": 4160,
    "total_tokens": 4460,
    "input_tokens_details": {"text_tokens": 100, "image_tokens": 200},
}


def test_each_kind_of_token_is_priced_per_million() -> None:
    expected = (100 * 5.0 + 200 * 10.0 + 4160 * 40.0) / 1_000_000
    assert spend.estimate(USAGE, PRICE) == pytest.approx(expected)


def test_usage_without_the_input_split_counts_input_as_text() -> None:
    assert spend.estimate({"input_tokens": 1000, "output_tokens": 0}, PRICE) == pytest.approx(0.005)


def test_a_job_without_usage_or_without_a_price_has_no_estimate() -> None:
    prices = {"gpt-image-1": PRICE}
    assert spend.cost("gpt-image-1", {"usage": USAGE}, prices) == pytest.approx(0.1689)
    assert spend.cost("gpt-image-1", {"revised_prompt": "x"}, prices) is None
    assert spend.cost("gpt-image-1", None, prices) is None
    assert spend.cost("other-model", {"usage": USAGE}, prices) is None


def test_the_default_price_table_prices_the_known_gpt_image_models() -> None:
    prices = Settings().prices
    assert prices["gpt-image-1"] == PRICE
    assert prices["gpt-image-1-mini"].output_image > 0


def test_a_price_table_entry_with_an_unknown_field_is_refused() -> None:
    with pytest.raises(ValueError, match="output_text"):
        Settings(prices={"gpt-image-1": {"output_text": 1.0}})
