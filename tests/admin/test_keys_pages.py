"""The admin key pages: rotation with a grace period, expiry, per-key usage, names and the name filter."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select

from imagegate.db import utcnow
from imagegate.keys.models import ApiKey
from imagegate.keys.service import KeyLimits
from tests.helpers import Harness, admin_csrf, bearer

NEW_SECRET = re.compile(r'id="new-key">(ig_[^<]+)<')


async def stored_key(harness: Harness, handle: str) -> ApiKey:
    """The key's row as stored."""
    async with harness.app.state.services.sessions() as session:
        key: ApiKey | None = await session.scalar(select(ApiKey).where(ApiKey.handle == handle))
    assert key is not None
    return key


async def test_rotation_shows_the_new_secret_once_and_keeps_the_old_one_for_the_grace(harness: Harness) -> None:
    key, old = await harness.new_key("laptop")
    csrf = await admin_csrf(harness, f"/admin/keys/{key.handle}")
    rotated = await harness.client.post(f"/admin/keys/{key.handle}/rotate", data={"csrf": csrf, "grace": "3600"})
    assert rotated.status_code == 303
    assert rotated.headers["location"] == f"/admin/keys/{key.handle}"
    shown = await harness.client.get(f"/admin/keys/{key.handle}")
    secret = NEW_SECRET.search(shown.text)
    assert secret is not None
    assert "keeps working until" in shown.text
    assert NEW_SECRET.search((await harness.client.get(f"/admin/keys/{key.handle}")).text) is None
    for token in (old, secret[1]):
        assert (await harness.client.get("/v1/usage", headers=bearer(token))).status_code == 200
    assert old != secret[1]


async def test_rotation_without_grace_stops_the_old_secret_at_once(harness: Harness) -> None:
    key, old = await harness.new_key("laptop")
    csrf = await admin_csrf(harness, f"/admin/keys/{key.handle}")
    await harness.client.post(f"/admin/keys/{key.handle}/rotate", data={"csrf": csrf, "grace": "0"})
    assert (await harness.client.get("/v1/usage", headers=bearer(old))).status_code == 401
    refused = await harness.client.post(f"/admin/keys/{key.handle}/rotate", data={"csrf": csrf, "grace": "99"})
    assert refused.status_code == 400
    assert "grace period" in refused.text
    assert (await harness.client.post(f"/admin/keys/{key.handle}/rotate", data={"grace": "0"})).status_code == 403


async def test_the_expiry_is_edited_and_cleared(harness: Harness) -> None:
    key, _token = await harness.new_key("laptop")
    csrf = await admin_csrf(harness, f"/admin/keys/{key.handle}")
    day = (utcnow() + timedelta(days=30)).date().isoformat()
    saved = await harness.client.post(
        f"/admin/keys/{key.handle}", data={"csrf": csrf, "name": "laptop", "expires": day, "scopes": ["generate"]}
    )
    assert saved.status_code == 303
    expires_at = (await stored_key(harness, key.handle)).expires_at
    assert expires_at is not None
    assert expires_at.date().isoformat() == day
    assert f'value="{day}"' in (await harness.client.get(f"/admin/keys/{key.handle}")).text
    past = await harness.client.post(
        f"/admin/keys/{key.handle}", data={"csrf": csrf, "name": "laptop", "expires": "2001-01-01"}
    )
    assert past.status_code == 400
    assert "in the past" in past.text
    cleared = await harness.client.post(
        f"/admin/keys/{key.handle}", data={"csrf": csrf, "name": "laptop", "expires": ""}
    )
    assert cleared.status_code == 303
    assert (await stored_key(harness, key.handle)).expires_at is None


async def test_a_keys_page_shows_its_use_against_its_quotas(harness: Harness) -> None:
    key, token = await harness.new_key("reporter", limits=KeyLimits(daily_image_quota=5, monthly_image_quota=40))
    for prompt in ("one", "two", "fail:no ink"):
        await harness.client.post("/v1/images/generate", json={"prompt": prompt}, headers=bearer(token))
    await admin_csrf(harness)
    shown = (await harness.client.get(f"/admin/keys/{key.handle}")).text
    assert re.search(r'id="images-today">2 / 5<', shown)
    assert re.search(r'id="images-month">2 / 40<', shown)
    today = utcnow().strftime("%a %d %b")
    row = re.search(rf"<tr><td>{today}</td>(.*?)</tr>", shown)
    assert row is not None
    assert "<th>Day</th><th>succeeded</th><th>failed</th><th>Total</th>" in shown
    assert re.findall(r"<td>(\d*)</td>", row[1]) == ["2", "1", "3"]
    assert "Last used</dt><dd>-" not in shown


async def test_names_are_shown_beside_handles_and_filter_the_history_and_keys(harness: Harness) -> None:
    reporter, token = await harness.new_key("nightly reporter")
    other, other_token = await harness.new_key("laptop")
    await harness.client.post("/v1/images/generate", json={"prompt": "by the reporter"}, headers=bearer(token))
    await harness.client.post("/v1/images/generate", json={"prompt": "by the laptop"}, headers=bearer(other_token))
    await admin_csrf(harness)
    history = (await harness.client.get("/admin/history")).text
    assert "nightly reporter</a>" in history
    assert reporter.handle in history
    by_name = (await harness.client.get("/admin/history", params={"key": "REPORTER"})).text
    assert "by the reporter" in by_name
    assert "by the laptop" not in by_name
    keys = (await harness.client.get("/admin/keys", params={"name": "night"})).text
    assert reporter.handle in keys
    assert other.handle not in keys
    audit = (await harness.client.get("/admin/audit")).text
    assert "nightly reporter</a>" in audit


NAVIGATION = ('href="/admin/history"', 'href="/admin/status"', "Log out")


async def test_a_refused_new_key_keeps_the_navigation_and_everything_typed(harness: Harness) -> None:
    csrf = await admin_csrf(harness, "/admin/keys")
    typed = {
        "csrf": csrf,
        "name": "render-bot",
        "expires": (utcnow() + timedelta(days=9)).date().isoformat(),
        "models": "demo, fake",
        "scopes": ["generate", "read"],
        "rate_limit": "30",
        "daily_quota": "0",
        "monthly_quota": "400",
        "max_concurrent": "2",
        "monthly_budget_usd": "7.5",
    }
    refused = await harness.client.post("/admin/keys", data=typed)
    assert refused.status_code == 400
    for shown in NAVIGATION:
        assert shown in refused.text
    assert 'role="alert" id="form-error">daily quota must be a whole number' in refused.text
    assert 'name="daily_quota" aria-invalid="true"' in refused.text
    for name in ("name", "expires", "models", "rate_limit", "daily_quota", "monthly_quota", "max_concurrent"):
        assert f'value="{typed[name]}"' in refused.text, name
    assert 'name="monthly_budget_usd" type="number" min="0.01" step="0.01" placeholder="unlimited" value="7.5"' in (
        refused.text
    )
    assert 'value="generate" checked>' in refused.text
    assert 'value="edit">' in refused.text  # left unticked, as posted
    assert ">render-bot</a>" not in refused.text  # no key was made
    assert (await harness.client.post("/admin/keys", data={**typed, "daily_quota": "5"})).status_code == 303
    assert ">render-bot</a>" in (await harness.client.get("/admin/keys")).text


async def test_a_refused_key_edit_keeps_the_navigation_and_everything_typed(harness: Harness) -> None:
    key, _token = await harness.new_key("laptop", limits=KeyLimits(rate_limit_per_minute=10))
    csrf = await admin_csrf(harness, f"/admin/keys/{key.handle}")
    typed = {"csrf": csrf, "name": "renamed laptop", "models": "demo", "scopes": ["read"], "rate_limit": "lots"}
    refused = await harness.client.post(f"/admin/keys/{key.handle}", data=typed)
    assert refused.status_code == 400
    for shown in NAVIGATION:
        assert shown in refused.text
    assert 'id="form-error">rate limit must be a whole number' in refused.text
    assert 'role="alert">Not saved: rate limit must be a whole number' in refused.text  # seen without scrolling
    assert 'name="rate_limit" aria-invalid="true"' in refused.text
    assert 'value="renamed laptop"' in refused.text
    assert 'value="lots"' in refused.text
    assert 'value="read" checked>' in refused.text
    assert 'value="generate">' in refused.text
    assert "Usage</h2>" in refused.text  # still the key's page
    stored = await stored_key(harness, key.handle)
    assert (stored.name, stored.rate_limit_per_minute) == ("laptop", 10)
    shown_again = (await harness.client.get(f"/admin/keys/{key.handle}")).text
    assert 'value="laptop"' in shown_again
    assert 'value="10"' in shown_again
    assert "aria-invalid" not in shown_again
