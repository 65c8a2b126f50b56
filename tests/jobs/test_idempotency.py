"""Idempotency-Key: replay, mismatch, in-flight, and a key freed again when nothing was accepted."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from imagegate.db import utcnow
from imagegate.jobs.models import IdempotencyRecord, Job
from tests.fakes.backends import tiny_png
from tests.helpers import GENERATE, Harness, b64, count_fingerprints


async def count_jobs(harness: Harness) -> int:
    """Jobs in the database."""
    async with harness.app.state.services.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Job)) or 0)


async def test_same_key_and_body_replays_the_original_job(harness: Harness) -> None:
    auth = {**await harness.auth(), "Idempotency-Key": "order-42"}
    first = await harness.client.post(GENERATE, json={"prompt": "once", "count": 2}, headers=auth)
    again = await harness.client.post(GENERATE, json={"count": 2, "prompt": "once"}, headers=auth)
    assert first.status_code == again.status_code == 200
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["images"] == first.json()["images"]
    assert await count_jobs(harness) == 1
    assert len(harness.fake.requests) == 1


async def test_the_same_idempotency_key_from_another_api_key_is_independent(harness: Harness) -> None:
    one = {**await harness.auth("one"), "Idempotency-Key": "shared"}
    two = {**await harness.auth("two"), "Idempotency-Key": "shared"}
    a = await harness.client.post(GENERATE, json={"prompt": "x"}, headers=one)
    b = await harness.client.post(GENERATE, json={"prompt": "x"}, headers=two)
    assert a.json()["id"] != b.json()["id"]


async def test_same_key_with_a_different_body_is_422(harness: Harness) -> None:
    auth = {**await harness.auth(), "Idempotency-Key": "k1"}
    assert (await harness.client.post(GENERATE, json={"prompt": "first"}, headers=auth)).status_code == 200
    mismatch = await harness.client.post(GENERATE, json={"prompt": "second"}, headers=auth)
    assert mismatch.status_code == 422
    assert mismatch.json()["error"]["code"] == "idempotency_key_reused"
    assert await count_jobs(harness) == 1


async def test_a_repeat_while_the_first_is_being_accepted_is_409(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = harness.app.state.services.storage
    writing, release = asyncio.Event(), asyncio.Event()
    real_put = storage.put

    async def slow_put(key: str, data: bytes) -> None:
        writing.set()
        await release.wait()
        await real_put(key, data)

    monkeypatch.setattr(storage, "put", slow_put)
    auth = {**await harness.auth(), "Idempotency-Key": "in-flight"}
    body: dict[str, Any] = {"prompt": "edit", "reference_image_base64": b64(tiny_png())}
    first = asyncio.create_task(harness.client.post(GENERATE, json=body, headers=auth))
    await writing.wait()
    repeat = await harness.client.post(GENERATE, json=body, headers=auth)
    assert repeat.status_code == 409
    assert repeat.json()["error"]["code"] == "idempotency_in_progress"
    release.set()
    assert (await first).status_code == 200
    replay = await harness.client.post(GENERATE, json=body, headers=auth)
    assert replay.headers["idempotent-replayed"] == "true"
    assert await count_jobs(harness) == 1


async def test_a_refused_request_does_not_use_up_the_key(harness: Harness) -> None:
    auth = {**await harness.auth(), "Idempotency-Key": "retry-me"}
    bad = await harness.client.post(GENERATE, json={"prompt": "x", "size": "huge"}, headers=auth)
    assert bad.status_code == 400
    fixed = await harness.client.post(GENERATE, json={"prompt": "x", "size": "64x64"}, headers=auth)
    assert fixed.status_code == 200
    assert "idempotent-replayed" not in fixed.headers


async def test_a_remembered_key_is_forgotten_after_its_time(harness: Harness) -> None:
    auth = {**await harness.auth(), "Idempotency-Key": "old"}
    first = await harness.client.post(GENERATE, json={"prompt": "x"}, headers=auth)
    async with harness.app.state.services.sessions() as session, session.begin():
        await session.execute(update(IdempotencyRecord).values(expires_at=utcnow() - timedelta(seconds=1)))
    second = await harness.client.post(GENERATE, json={"prompt": "x"}, headers=auth)
    assert second.json()["id"] != first.json()["id"]


@pytest.mark.parametrize("value", ["", "x" * 256])
async def test_a_malformed_idempotency_key_is_400(harness: Harness, value: str) -> None:
    auth = {**await harness.auth(), "Idempotency-Key": value}
    response = await harness.client.post(GENERATE, json={"prompt": "x"}, headers=auth)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "Idempotency-Key"


@pytest.mark.parametrize("path", [GENERATE, "/v1/images/generations"])
async def test_only_a_request_with_an_idempotency_key_is_fingerprinted(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    fingerprinted = count_fingerprints(monkeypatch)
    auth = await harness.auth()
    plain = await harness.client.post(path, json={"prompt": "no key"}, headers=auth)
    assert plain.status_code == 200, plain.text
    assert fingerprinted == []
    keyed = await harness.client.post(path, json={"prompt": "a key"}, headers={**auth, "Idempotency-Key": "fp-1"})
    assert keyed.status_code == 200, keyed.text
    assert len(fingerprinted) == 1
