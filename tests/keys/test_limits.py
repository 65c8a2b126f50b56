"""Per-key limits, each hit exactly at its boundary, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx2
from sqlalchemy import func, select, update

from imagegate.db import utcnow
from imagegate.jobs.models import Job
from imagegate.keys.models import ApiKey, AuditEvent, RateEvent
from tests.fakes.backends import tiny_png
from tests.helpers import ASYNC, GENERATE, Harness, b64, wait_status


async def generate(harness: Harness, auth: dict[str, str], **body: object) -> httpx2.Response:
    """POST a generation (prompt 'x' unless given)."""
    return await harness.client.post(GENERATE, json={"prompt": "x", **body}, headers=auth)


async def refusals(harness: Harness, action: str) -> int:
    """How many refusals of this kind the audit log holds."""
    async with harness.app.state.services.sessions() as session:
        count = await session.scalar(select(func.count()).where(AuditEvent.action == action))
    return int(count or 0)


async def test_allowed_models_cannot_be_bypassed_by_leaving_model_out(harness: Harness) -> None:
    auth = await harness.auth(allowed_models=["demo"])
    implicit = await generate(harness, auth)
    assert implicit.status_code == 403
    assert implicit.json()["error"]["code"] == "model_not_allowed"
    assert "demo" in implicit.json()["error"]["message"]
    other = await generate(harness, auth, model="fake-model")
    assert other.status_code == 403
    assert (await generate(harness, auth, model="demo", size="32x32")).status_code == 200
    assert await refusals(harness, "refused.model_not_allowed") == 2


async def test_a_backend_name_allows_every_model_routed_to_it(harness: Harness) -> None:
    auth = await harness.auth(allowed_models=["fake"])
    assert (await generate(harness, auth)).status_code == 200
    assert (await generate(harness, auth, model="demo")).status_code == 403


async def test_scopes(harness: Harness) -> None:
    generate_only = await harness.auth(scopes=["generate"])
    job = (await generate(harness, generate_only)).json()
    read = await harness.client.get(f"/v1/images/jobs/{job['id']}", headers=generate_only)
    assert read.status_code == 403
    assert read.json()["error"]["code"] == "insufficient_scope"
    assert (await harness.client.get("/v1/images/jobs", headers=generate_only)).status_code == 403
    assert (await harness.client.delete(f"/v1/images/jobs/{job['id']}", headers=generate_only)).status_code == 403
    edit = await generate(harness, generate_only, reference_image_base64=b64(tiny_png()))
    assert edit.status_code == 403
    assert "'edit'" in edit.json()["error"]["message"]

    edit_only = await harness.auth(scopes=["edit"])
    assert (await generate(harness, edit_only)).status_code == 403
    assert (await generate(harness, edit_only, reference_image_base64=b64(tiny_png()))).status_code == 200
    assert await refusals(harness, "refused.insufficient_scope") == 5


async def test_rate_limit_at_its_boundary_with_headers_on_every_response(harness: Harness) -> None:
    auth = await harness.auth(rate_limit_per_minute=3)
    remaining = []
    for path in ["/v1/images/jobs", "/v1/images/jobs/img_missing", "/v1/usage"]:
        response = await harness.client.get(path, headers=auth)
        assert response.headers["x-ratelimit-limit"] == "3"
        remaining.append(response.headers["x-ratelimit-remaining"])
    assert remaining == ["2", "1", "0"]
    refused = await harness.client.get("/v1/images/jobs", headers=auth)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-reset"] == refused.headers["retry-after"]
    assert await refusals(harness, "refused.rate_limit_exceeded") == 1


async def test_the_rate_window_slides(harness: Harness) -> None:
    key, token = await harness.new_key()
    async with harness.app.state.services.sessions() as session, session.begin():
        await session.execute(update(ApiKey).where(ApiKey.id == key.id).values(rate_limit_per_minute=2))
        now = utcnow()
        session.add_all(
            [
                RateEvent(key_id=key.id, at=now - timedelta(seconds=61)),
                RateEvent(key_id=key.id, at=now - timedelta(seconds=30)),
            ]
        )
    auth = {"Authorization": f"Bearer {token}"}
    first = await harness.client.get("/v1/images/jobs", headers=auth)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-remaining"] == "0"
    assert 25 <= int(first.headers["x-ratelimit-reset"]) <= 31  # the event 30 s ago leaves first
    assert (await harness.client.get("/v1/images/jobs", headers=auth)).status_code == 429


async def test_unlimited_keys_get_no_rate_headers(harness: Harness) -> None:
    response = await harness.client.get("/v1/images/jobs", headers=await harness.auth())
    assert "x-ratelimit-limit" not in response.headers


async def test_daily_quota_at_its_boundary_counts_images_not_requests(harness: Harness) -> None:
    auth = await harness.auth(daily_image_quota=3)
    assert (await generate(harness, auth, count=2)).status_code == 200
    over = await generate(harness, auth, count=2)
    assert over.status_code == 429
    assert over.json()["error"]["code"] == "quota_exceeded"
    assert "resets at" in over.json()["error"]["message"]
    assert int(over.headers["retry-after"]) <= 86_400
    assert (await generate(harness, auth, count=1)).status_code == 200
    assert (await generate(harness, auth, count=1)).status_code == 429
    async with harness.app.state.services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Job)) == 2


async def test_failed_jobs_release_their_reservation(harness: Harness) -> None:
    auth = await harness.auth(monthly_image_quota=2)
    failed = await generate(harness, auth, prompt="fail: upstream said no", count=2)
    assert failed.status_code == 502
    assert (await generate(harness, auth, count=2)).status_code == 200
    assert (await generate(harness, auth)).status_code == 429


async def test_deleting_jobs_does_not_win_back_quota(harness: Harness) -> None:
    auth = await harness.auth(daily_image_quota=1)
    job = (await generate(harness, auth)).json()
    assert (await harness.client.delete(f"/v1/images/jobs/{job['id']}", headers=auth)).status_code == 200
    assert (await generate(harness, auth)).status_code == 429


async def test_max_concurrent_jobs_at_its_boundary(harness: Harness) -> None:
    auth = await harness.auth(max_concurrent_jobs=2)
    first = await generate(harness, {**auth, **ASYNC}, prompt="gate:1")
    assert first.status_code == 202
    assert (await generate(harness, {**auth, **ASYNC}, prompt="gate:2")).status_code == 202
    third = await generate(harness, {**auth, **ASYNC}, prompt="gate:3")
    assert third.status_code == 429
    assert third.json()["error"]["code"] == "concurrency_limit_exceeded"
    await harness.fake.wait_started(2)
    harness.fake.open("gate:1")
    await wait_status(harness, first.json()["id"], auth, "succeeded")
    assert (await generate(harness, auth, prompt="after")).status_code == 200
    harness.fake.open("gate:2")


async def test_parallel_requests_never_overrun_a_small_quota(harness: Harness) -> None:
    auth = await harness.auth(daily_image_quota=5)

    async def one(i: int) -> int:
        response = await harness.client.post(GENERATE, json={"prompt": f"p{i}"}, headers={**auth, **ASYNC})
        return response.status_code

    statuses = await asyncio.gather(*(one(i) for i in range(30)))
    assert sorted(statuses).count(202) == 5
    assert statuses.count(429) == 25
    async with harness.app.state.services.sessions() as session:
        assert await session.scalar(select(func.sum(Job.count))) == 5


async def test_usage_reports_what_is_left(harness: Harness) -> None:
    auth = await harness.auth(
        daily_image_quota=10,
        monthly_image_quota=100,
        rate_limit_per_minute=50,
        max_concurrent_jobs=3,
        allowed_models=["fake-model"],
    )
    await generate(harness, auth, count=3)
    usage = (await harness.client.get("/v1/usage", headers=auth)).json()
    assert usage["today"]["images"] == 3
    assert usage["today"]["remaining"] == 7
    assert usage["month"]["remaining"] == 97
    assert usage["requests_per_minute"] == {"limit": 50, "used": 2, "remaining": 48}
    assert usage["concurrent_jobs"] == {"active": 0, "limit": 3}
    assert usage["allowed_models"] == ["fake-model"]
    assert usage["today"]["resets_at"] > utcnow().isoformat()
