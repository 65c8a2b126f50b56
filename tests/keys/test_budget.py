"""A key's monthly budget in dollars of estimated spend: refused with 429 like the image quotas, on each surface."""

from __future__ import annotations

import pytest

from imagegate.keys.service import KeyLimits
from imagegate.settings import BackendConfig
from tests.helpers import FAKE_TYPE, HarnessFactory, bearer, stored_job

PRICES = {"fake-model": {"input_text": 5.0, "input_image": 10.0, "output_image": 40.0}}
# 5,000 output image tokens at $40 per million: $0.20, reported with every image, as an OpenAI-style backend does.
USAGE = {"input_tokens": 0, "output_tokens": 5_000}
REPORTING = {"fake": BackendConfig(type=FAKE_TYPE, options={"usage": USAGE}), "demo": BackendConfig(type="demo")}


async def test_a_key_over_its_budget_is_refused_on_the_native_and_openai_surfaces(
    harness_with: HarnessFactory,
) -> None:
    async with harness_with(prices=PRICES, backends=REPORTING) as harness:
        _key, token = await harness.new_key("spender", limits=KeyLimits(monthly_budget_usd=0.3))
        first = await harness.client.post("/v1/images/generate", json={"prompt": "one"}, headers=bearer(token))
        assert first.status_code == 200
        assert (await stored_job(harness, first.json()["id"])).cost_usd == pytest.approx(0.2)  # priced at its finish
        second = await harness.client.post("/v1/images/generate", json={"prompt": "two"}, headers=bearer(token))
        assert second.status_code == 200  # $0.20 spent of $0.30: the job that crosses the budget still runs

        native = await harness.client.post("/v1/images/generate", json={"prompt": "3"}, headers=bearer(token))
        assert native.status_code == 429
        assert native.json()["error"]["code"] == "quota_exceeded"
        assert "monthly budget of $0.30 and has spent an estimated $0.40" in native.json()["error"]["message"]
        assert int(native.headers["retry-after"]) > 0

        openai = await harness.client.post("/v1/images/generations", json={"prompt": "3"}, headers=bearer(token))
        assert openai.status_code == 429
        assert openai.json()["error"]["type"] == "insufficient_quota"
        assert "monthly budget" in openai.json()["error"]["message"]
        assert "retry-after" in openai.headers


async def test_a_key_without_a_budget_is_not_limited_by_spend(harness_with: HarnessFactory) -> None:
    async with harness_with(prices=PRICES, backends=REPORTING) as harness:
        _key, token = await harness.new_key("free")
        for prompt in ("one", "two"):
            answer = await harness.client.post("/v1/images/generate", json={"prompt": prompt}, headers=bearer(token))
            assert answer.status_code == 200
        again = await harness.client.post("/v1/images/generate", json={"prompt": "3"}, headers=bearer(token))
        assert again.status_code == 200
