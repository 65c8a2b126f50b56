"""The per-process key cache: a verified key is reused briefly, and a change anywhere still takes effect."""

from __future__ import annotations

import asyncio

from imagegate.errors import InvalidApiKey
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


class Verifications:
    """A fake verification of one key that waits until released, counting its calls."""

    def __init__(self, fails: bool = False) -> None:
        self.calls = 0
        self.released = asyncio.Event()
        self.fails = fails

    async def __call__(self) -> ApiKey:
        self.calls += 1
        await self.released.wait()
        if self.fails and self.calls == 1:
            raise InvalidApiKey("the first verification fails")
        return ApiKey(handle=f"key_{self.calls}")


async def _release_when_waiting(verifications: Verifications, cache: KeyCache, followers: int) -> None:
    """Release the verification once the followers wait for it (polled with a deadline)."""
    async with asyncio.timeout(30):
        while len(cache._flights) < 1 or _waiting(cache) < followers:
            await asyncio.sleep(0)
    verifications.released.set()


def _waiting(cache: KeyCache) -> int:
    """How many wait for a verification now (each follower's shield adds a callback to it)."""
    return sum(len(future._callbacks) for future, _generation in cache._flights.values())


async def test_requests_asking_while_a_key_is_verified_share_that_verification() -> None:
    cache, verifications = KeyCache(0.5, Clock()), Verifications()
    release = asyncio.create_task(_release_when_waiting(verifications, cache, followers=7))
    answers = await asyncio.gather(*(cache.verify_once("digest", verifications) for _ in range(8)))
    await release
    assert verifications.calls == 1
    assert {key.handle for key, _own in answers} == {"key_1"}
    assert sorted(own for _key, own in answers) == [False] * 7 + [True]
    assert cache.get("digest") is answers[0][0]


async def test_a_failed_verification_is_not_shared() -> None:
    cache, verifications = KeyCache(0.5, Clock()), Verifications(fails=True)
    release = asyncio.create_task(_release_when_waiting(verifications, cache, followers=2))
    answers = await asyncio.gather(
        *(cache.verify_once("digest", verifications) for _ in range(3)), return_exceptions=True
    )
    await release
    assert isinstance(answers[0], InvalidApiKey)
    # The two that waited were not handed the error: they verified again (together or each).
    assert verifications.calls > 1
    assert all(isinstance(answer, tuple) and answer[0].handle != "key_1" for answer in answers[1:])


async def test_a_burst_with_the_key_not_cached_reads_it_once(harness: Harness) -> None:
    _key, token = await harness.new_key()
    auth = {"Authorization": f"Bearer {token}"}
    with counting(harness.app.state.services.engine) as counts:
        statuses = await asyncio.gather(*(harness.client.get(MODELS, headers=auth) for _ in range(8)))
    assert [response.status_code for response in statuses] == [200] * 8
    assert len([sql for sql in counts.statements if sql.startswith("SELECT api_key.id")]) == 1
