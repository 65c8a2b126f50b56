"""Estimated spend: reported token usage priced per million tokens of each kind at the finish, summed in SQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from imagegate.jobs import spend
from imagegate.jobs.models import Job
from imagegate.settings import ModelPrice, Settings
from tests.helpers import Harness, HarnessFactory, bearer, counting, generated, reporting_backends, stored_job

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


# Spend in SQL: priced into the finish, summed by the database.

PRICES = {"fake-model": {"input_text": 5.0, "input_image": 10.0, "output_image": 40.0}}
REPORTED = {"input_tokens": 0, "output_tokens": 5_000}  # $0.20 at the prices above
REPORTING = reporting_backends(REPORTED)


async def _generate(harness: Harness, token: str, model: str = "fake-model") -> str:
    return await generated(harness, token, model=model)


async def test_a_job_is_priced_at_its_finish_and_a_key_s_spend_summed_in_sql(harness_with: HarnessFactory) -> None:
    async with harness_with(prices=PRICES, backends=REPORTING) as harness:
        key, token = await harness.new_key("spender")
        priced = await _generate(harness, token)
        unpriced = await _generate(harness, token, model="demo")  # its backend reports no usage
        assert (await stored_job(harness, priced)).cost_usd == pytest.approx(0.2)
        assert (await stored_job(harness, unpriced)).cost_usd is None
        now = datetime.now(UTC)
        # Yesterday's job counts for yesterday, and not for a month that starts today.
        async with harness.app.state.services.sessions() as session, session.begin():
            yesterday = datetime(now.year, now.month, now.day, tzinfo=UTC) - timedelta(minutes=1)
            await session.execute(update(Job).where(Job.id == priced).values(created_at=yesterday))
        await _generate(harness, token)
        services = harness.app.state.services
        with counting(services.engine) as counts:
            async with services.sessions() as session:
                month = await spend.known_cost_since(session, since=yesterday, key_id=key.id)
                today = await spend.known_cost_since(session, since=now - timedelta(seconds=1), key_id=key.id)
        # The scheduler's heartbeats and queue polls run meanwhile: only the spend's own statements are counted.
        spent = [sql for sql in counts.statements if "cost_usd" in sql or "job.result" in sql]
        assert len(spent) == 2, spent  # one aggregate each, no job rows loaded
        assert all(sql.startswith("SELECT sum(job.cost_usd)") for sql in spent), spent
        assert month == pytest.approx(0.4)
        assert today == pytest.approx(0.2)  # the second job only
        async with services.sessions() as session:
            days = dict(await spend.cost_per_day(session, now=now, days=3, key_id=key.id))
            everyone = dict(await spend.cost_per_day(session, now=now, days=3))
        assert days == {
            now.date(): pytest.approx(0.2),
            now.date() - timedelta(days=1): pytest.approx(0.2),
            now.date() - timedelta(days=2): 0.0,
        }
        assert everyone == days


async def test_a_key_whose_jobs_could_not_be_priced_has_an_unknown_spend(harness_with: HarnessFactory) -> None:
    async with harness_with(prices=PRICES, backends=REPORTING) as harness:
        key, token = await harness.new_key("unknown")
        await _generate(harness, token, model="demo")
        async with harness.app.state.services.sessions() as session:
            assert await spend.known_cost_since(session, since=datetime(2000, 1, 1, tzinfo=UTC), key_id=key.id) is None
            assert await spend.cost_since(session, since=datetime(2000, 1, 1, tzinfo=UTC), key_id=key.id) == 0.0
        usage = (await harness.client.get("/v1/usage", headers=bearer(token))).json()
        assert usage["spend"]["estimated_usd"] is None  # unknown, not 0
