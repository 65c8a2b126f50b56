"""GET /v1/usage: the calling key's monthly budget and this month's estimated spend beside its image quotas."""

from __future__ import annotations

from imagegate.db import utcnow
from imagegate.keys.service import KeyLimits
from imagegate.settings import BackendConfig
from tests.helpers import FAKE_TYPE, Harness, HarnessFactory, bearer

PRICES = {"fake-model": {"input_text": 5.0, "input_image": 10.0, "output_image": 40.0}}
# 100 text + 200 image tokens in, 4160 image tokens out: $0.1689 at the prices above.
USAGE = {"input_tokens": 300, "output_tokens": 4160, "input_tokens_details": {"text_tokens": 100, "image_tokens": 200}}

# The fake backend reports that usage with every image, as the OpenAI backend does; the demo one reports none.
REPORTING = {"fake": BackendConfig(type=FAKE_TYPE, options={"usage": USAGE}), "demo": BackendConfig(type="demo")}


async def test_usage_shows_the_budget_and_this_month_s_estimated_spend(harness_with: HarnessFactory) -> None:
    async with harness_with(prices=PRICES, backends=REPORTING) as harness:
        _key, token = await harness.new_key("painter", limits=KeyLimits(monthly_budget_usd=1.0))
        for _ in range(2):
            made = await harness.client.post("/v1/images/generate", json={"prompt": "a lamp"}, headers=bearer(token))
            assert made.status_code == 200
        unpriced = {"prompt": "no usage", "model": "demo"}
        assert (await harness.client.post("/v1/images/generate", json=unpriced, headers=bearer(token))).is_success
        spend = (await harness.client.get("/v1/usage", headers=bearer(token))).json()["spend"]
    assert (spend["estimated_usd"], spend["budget_usd"], spend["remaining_usd"]) == (0.3378, 1.0, 0.6622)
    assert spend["resets_at"] > utcnow().isoformat()


async def test_usage_says_null_where_spend_or_budget_is_unknown(harness: Harness) -> None:
    _key, token = await harness.new_key("plain")
    await harness.client.post("/v1/images/generate", json={"prompt": "no usage"}, headers=bearer(token))
    spend = (await harness.client.get("/v1/usage", headers=bearer(token))).json()["spend"]
    assert (spend["estimated_usd"], spend["budget_usd"], spend["remaining_usd"]) == (None, None, None)
    _budgeted, budget_token = await harness.new_key("budgeted", limits=KeyLimits(monthly_budget_usd=5.0))
    spend = (await harness.client.get("/v1/usage", headers=bearer(budget_token))).json()["spend"]
    assert (spend["estimated_usd"], spend["budget_usd"], spend["remaining_usd"]) == (None, 5.0, 5.0)
