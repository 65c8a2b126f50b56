"""Estimated spend in the admin UI: on the job page, per key (this month and per day) and per day overall."""

from __future__ import annotations

import re

from tests.helpers import Harness, HarnessFactory, admin_csrf, bearer, generated, reporting_backends

PRICES = {"fake-model": {"input_text": 5.0, "input_image": 10.0, "output_image": 40.0}}
# 100 text + 200 image tokens in, 4160 image tokens out: $0.1689 at the prices above.
USAGE = {"input_tokens": 300, "output_tokens": 4160, "input_tokens_details": {"text_tokens": 100, "image_tokens": 200}}
REPORTING = reporting_backends(USAGE)


async def _job_with_usage(harness: Harness, token: str) -> str:
    """A finished job whose backend reported token usage."""
    return await generated(harness, token, "a lamp")


async def test_spend_is_shown_per_job_per_key_and_per_day(harness_with: HarnessFactory) -> None:
    async with harness_with(prices=PRICES, backends=REPORTING) as harness:
        key, token = await harness.new_key("painter")
        first = await _job_with_usage(harness, token)
        await _job_with_usage(harness, token)
        unpriced = {"prompt": "no usage", "model": "demo"}
        assert (await harness.client.post("/v1/images/generate", json=unpriced, headers=bearer(token))).is_success
        await admin_csrf(harness)
        job_page = (await harness.client.get(f"/admin/jobs/{first}")).text
        assert re.search(r'id="job-cost">\$0\.1689 ', job_page)
        key_page = (await harness.client.get(f"/admin/keys/{key.handle}")).text
        assert re.search(r'id="spend-month">\$0\.3378<', key_page)
        assert '<td class="cost">$0.3378</td></tr>' in key_page
        overview = (await harness.client.get("/admin")).text
        assert "<td>$0.3378</td></tr>" in overview


async def test_a_job_without_reported_usage_shows_no_cost(harness: Harness) -> None:
    key, token = await harness.new_key("plain")
    answer = await harness.client.post("/v1/images/generate", json={"prompt": "x"}, headers=bearer(token))
    await admin_csrf(harness)
    assert 'id="job-cost"' not in (await harness.client.get(f"/admin/jobs/{answer.json()['id']}")).text
    # Unknown, not $0: nothing this key ran could be priced (as /v1/usage says null).
    assert 'id="spend-month">unknown<' in (await harness.client.get(f"/admin/keys/{key.handle}")).text
    overview = (await harness.client.get("/admin")).text
    assert "No usage reported in these 14 days." in overview
    assert "<th>Estimated cost</th>" not in overview  # not fourteen empty rows


async def test_the_key_form_sets_and_clears_a_monthly_budget(harness: Harness) -> None:
    key, _token = await harness.new_key("budgeted")
    csrf = await admin_csrf(harness, f"/admin/keys/{key.handle}")
    form = {"csrf": csrf, "name": "budgeted", "scopes": ["generate", "read"]}
    saved = await harness.client.post(f"/admin/keys/{key.handle}", data={**form, "monthly_budget_usd": "12.5"})
    assert saved.status_code == 303
    shown = (await harness.client.get(f"/admin/keys/{key.handle}")).text
    assert re.search(r'id="spend-month">unknown / \$12\.50<', shown)  # nothing priced yet
    assert (
        'name="monthly_budget_usd" type="number" min="0.01" step="0.01" placeholder="unlimited" value="12.5"' in shown
    )
    refused = await harness.client.post(f"/admin/keys/{key.handle}", data={**form, "monthly_budget_usd": "-3"})
    assert refused.status_code == 400
    assert "monthly budget must be dollars above 0" in refused.text
    cleared = await harness.client.post(f"/admin/keys/{key.handle}", data={**form, "monthly_budget_usd": ""})
    assert cleared.status_code == 303
    assert "no budget" in (await harness.client.get(f"/admin/keys/{key.handle}")).text
