"""The per-process key cache: a verified key is reused briefly, and a change anywhere still takes effect."""

from __future__ import annotations

import asyncio

from imagegate.keys import service as keys
from imagegate.keys.cache import KeyCache, key_changed
from imagegate.keys.models import ApiKey
from tests.helpers import Harness, counting, disable_key_elsewhere

JOBS = "/v1/images/jobs"
MODELS = "/v1/images/models"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_reused_until_the_cache_lifetime_ends() -> None:
    clock, key = Clock(), ApiKey(handle="key_a")
    cache = KeyCache(0.5, clock)
    cache.put("digest", key, cache.generation())
    clock.now += 0.49
    assert cache.get("digest") is key
    clock.now += 0.01
    assert cache.get("digest") is None


def test_a_change_in_this_process_empties_the_cache_and_keeps_stale_reads_out() -> None:
    cache = KeyCache(0.5, Clock())
    cache.put("digest", ApiKey(handle="key_a"), cache.generation())
    key_changed()
    assert cache.get("digest") is None
    before = cache.generation()
    key_changed()  # a change lands while a request is still reading the key
    cache.put("digest", ApiKey(handle="key_a"), before)
    assert cache.get("digest") is None


def test_no_lifetime_caches_nothing() -> None:
    cache = KeyCache(0, Clock())
    cache.put("digest", ApiKey(handle="key_a"), cache.generation())
    assert cache.get("digest") is None


async def test_a_cached_key_is_not_read_again(harness: Harness) -> None:
    _key, token = await harness.new_key()
    auth = {"Authorization": f"Bearer {token}"}
    assert (await harness.client.get(MODELS, headers=auth)).status_code == 200
    with counting(harness.app.state.services.engine) as counts:
        assert (await harness.client.get(MODELS, headers=auth)).status_code == 200
    assert counts.statements == []


async def test_a_key_disabled_by_another_process_is_refused_soon(harness: Harness) -> None:
    key, token = await harness.new_key()
    auth = {"Authorization": f"Bearer {token}"}
    assert (await harness.client.get(JOBS, headers=auth)).status_code == 200  # now cached here
    await disable_key_elsewhere(harness, key)
    async with asyncio.timeout(30):  # a deadline for a loaded machine; the cache lives half a second
        while (response := await harness.client.get(JOBS, headers=auth)).status_code == 200:
            await asyncio.sleep(0.05)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "key_disabled"


async def test_a_key_disabled_here_is_refused_at_once(harness: Harness) -> None:
    key, token = await harness.new_key()
    auth = {"Authorization": f"Bearer {token}"}
    assert (await harness.client.get(JOBS, headers=auth)).status_code == 200
    async with harness.app.state.services.sessions() as session, session.begin():
        await keys.set_enabled(session=session, handle=key.handle, enabled=False)
    assert (await harness.client.get(JOBS, headers=auth)).status_code == 403


async def test_a_cached_rate_limited_key_still_counts_every_request(harness: Harness) -> None:
    _key, token = await harness.new_key(limits=keys.KeyLimits(rate_limit_per_minute=2))
    auth = {"Authorization": f"Bearer {token}"}
    statuses = [(await harness.client.get(MODELS, headers=auth)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
