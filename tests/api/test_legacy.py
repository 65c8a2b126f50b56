"""The openai-image-gen surface in process: its validation table, shapes, errors, image ids and keyless callers."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from PIL import Image
from sqlalchemy import select

from imagegate.jobs.models import Job, JobImage
from imagegate.keys.service import KeyLimits
from imagegate.settings import BackendConfig
from tests.fakes.openai_upstream import FakeOpenAI, running_fake_openai
from tests.helpers import (
    LEGACY_VALIDATION_CASES,
    Harness,
    HarnessFactory,
    count_fingerprints,
    fake_backends,
    login,
    oig_client,
)

ORIGINAL_MODELS = {"dall-e-2": "fake", "dall-e-3": "fake"}


def assert_legacy_error(response: httpx2.Response, status: int, code: str, message: str | None = None) -> None:
    """The original's envelope, exactly: error, status 'failed', code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "status", "code"}
    assert body["status"] == "failed"
    assert body["code"] == code
    if message is not None:
        assert body["error"] == message


@pytest.fixture
async def original(harness_with: HarnessFactory) -> AsyncIterator[Harness]:
    """ImageGate routing exactly the original's two model names (to the fake backend)."""
    async with harness_with(models=ORIGINAL_MODELS, default_model="dall-e-3") as running:
        yield running


async def test_every_message_of_the_validation_table(original: Harness) -> None:
    headers = {**(await original.auth()), "Content-Type": "application/json"}
    for body, message in LEGACY_VALIDATION_CASES:
        response = await original.client.post("/generate", content=json.dumps(body), headers=headers)
        assert response.status_code == 400, (body, response.text)
        assert response.json() == {"error": message, "status": "failed", "code": "VALIDATION_ERROR"}, body
    assert original.fake.requests == []


async def test_body_that_is_not_json_or_not_sent_as_json(original: Harness) -> None:
    headers = await original.auth()
    broken = await original.client.post(
        "/generate", content=b'{"prompt": "a cat"', headers={**headers, "Content-Type": "application/json"}
    )
    assert_legacy_error(broken, 400, "INVALID_JSON", "Invalid JSON in request body")
    empty = await original.client.post(
        "/generate", content=b"", headers={**headers, "Content-Type": "application/json"}
    )
    assert_legacy_error(empty, 400, "INVALID_JSON", "Invalid JSON in request body")
    form = await original.client.post("/generate", data={"prompt": "a cat"}, headers=headers)
    assert_legacy_error(form, 415, "HTTP_ERROR")


async def test_success_in_the_originals_shape_and_exact_image_ids(original: Harness) -> None:
    headers = await original.auth()
    response = await original.client.post(
        "/generate",
        json={"prompt": "a calm lake", "size": "1792x1024", "count": 2, "quality": "hd", "unknown": 1},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert body["job_id"].startswith("img_")
    assert len(body["images"]) == 2
    first = body["images"][0]
    assert set(first) == {"id", "url", "prompt", "model", "size"}
    assert first["url"] == f"/images/{first['id']}"
    assert first["prompt"] == "A CALM LAKE"  # the fake backend's revised prompt
    assert (first["model"], first["size"]) == ("dall-e-3", "1792x1024")
    assert len({image["id"] for image in body["images"]}) == 2
    (request,) = original.fake.requests
    assert (request.quality, request.count, request.width, request.height) == ("hd", 2, 1792, 1024)

    image = await original.client.get(first["url"], headers=headers)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(image.content)).size == (1792, 1024)
    for wrong in ("0", first["id"][:8], first["id"][:-1], first["id"] + "0", "png", first["id"].upper()):
        missing = await original.client.get(f"/images/{wrong}", headers=headers)
        assert_legacy_error(missing, 404, "IMAGE_NOT_FOUND", f"Image not found: {wrong}")
    other_key = await original.client.get(first["url"], headers=await original.auth("someone-else"))
    assert_legacy_error(other_key, 404, "IMAGE_NOT_FOUND")


async def test_delete_removes_one_image_and_the_history_shows_it(original: Harness) -> None:
    headers = await original.auth()
    body = (await original.client.post("/generate", json={"prompt": "two", "count": 2}, headers=headers)).json()
    gone, kept = body["images"]
    deleted = await original.client.delete(gone["url"], headers=headers)
    assert deleted.status_code == 200
    assert deleted.json() == {"status": "success", "message": f"Image {gone['id']} deleted"}
    assert_legacy_error(await original.client.get(gone["url"], headers=headers), 404, "IMAGE_NOT_FOUND")
    assert_legacy_error(await original.client.delete(gone["url"], headers=headers), 404, "IMAGE_NOT_FOUND")
    assert (await original.client.get(kept["url"], headers=headers)).status_code == 200
    async with original.app.state.services.sessions() as session:
        rows = {row.public_id: row for row in (await session.scalars(select(JobImage))).all()}
    assert rows[gone["id"]].deleted_at is not None
    assert rows[kept["id"]].deleted_at is None
    assert not (original.app.state.services.settings.data_dir / rows[gone["id"]].storage_key).exists()
    job = await original.client.get(f"/v1/images/jobs/{body['job_id']}", headers=headers)
    assert [image["name"] for image in job.json()["images"]] == [rows[kept["id"]].name]

    page = await admin_page(original, f"/admin/jobs/{body['job_id']}")
    assert f"({gone['id']}) deleted by the caller" in page
    assert f"id {kept['id']}" in page
    history = await admin_page(original, "/admin/history")
    assert "<th>Surface</th>" in history
    assert "<td>oig</td>" in history


async def admin_page(harness: Harness, path: str) -> str:
    """An admin page's HTML, logged in with the test password."""
    logged_in = await login(harness.client)
    assert logged_in.status_code == 303, logged_in.text
    page = await harness.client.get(path)
    assert page.status_code == 200, page.text
    return page.text


async def test_each_job_records_its_surface(original: Harness) -> None:
    headers = await original.auth()
    await original.client.post("/generate", json={"prompt": "oig"}, headers=headers)
    await original.client.post("/v1/images/generate", json={"prompt": "native"}, headers=headers)
    await original.client.post("/v1/images/generations", json={"prompt": "openai"}, headers=headers)
    async with original.app.state.services.sessions() as session:
        surfaces = {job.prompt: job.surface for job in (await session.scalars(select(Job))).all()}
    assert surfaces == {"oig": "oig", "native": "native", "openai": "openai"}


async def test_keyless_requests_are_refused_when_no_anonymous_key_is_set(original: Harness) -> None:
    async with oig_client(original) as oig:
        for response in (
            await oig.post("/generate", json={"prompt": "x"}),
            await oig.get("/images/whatever"),
            await oig.delete("/images/whatever"),
            await original.client.post("/generate", json={"prompt": "x"}),
        ):
            assert_legacy_error(response, 401, "MISSING_API_KEY")
        bad = await oig.post("/generate", json={"prompt": "x"}, headers={"Authorization": "Bearer ig_nope"})
        assert_legacy_error(bad, 401, "INVALID_API_KEY")
        health = await oig.get("/health")
    assert health.status_code == 200
    assert original.fake.requests == []


async def test_keyless_requests_act_as_the_anonymous_key(harness_with: HarnessFactory) -> None:
    async with harness_with(models=ORIGINAL_MODELS, default_model="dall-e-3") as setup:
        anonymous, _token = await setup.new_key("agents", limits=KeyLimits(daily_image_quota=3))
        own_headers = await setup.auth("own")
    async with (
        harness_with(models=ORIGINAL_MODELS, default_model="dall-e-3", oig_anonymous_key=anonymous.handle) as h,
        oig_client(h) as oig,
    ):
        made = await oig.post("/generate", json={"prompt": "keyless", "count": 2})
        assert made.status_code == 200, made.text
        image_id = made.json()["images"][0]["id"]
        assert (await oig.get(f"/images/{image_id}")).status_code == 200
        assert_legacy_error(await oig.get(f"/images/{image_id}", headers=own_headers), 404, "IMAGE_NOT_FOUND")
        with_key = await oig.post("/generate", json={"prompt": "with key", "count": 2}, headers=own_headers)
        assert with_key.status_code == 200
        over = await oig.post("/generate", json={"prompt": "over quota", "count": 2})
        assert_legacy_error(over, 429, "RATE_LIMIT_EXCEEDED")
        assert int(over.headers["retry-after"]) > 0
        async with h.app.state.services.sessions() as session:
            jobs = {job.prompt: job.key_handle for job in (await session.scalars(select(Job))).all()}
    assert jobs["keyless"] == anonymous.handle
    assert jobs["with key"] != anonymous.handle
    assert "over quota" not in jobs


async def test_the_anonymous_keys_rate_limit_answers_429_with_retry_after(harness_with: HarnessFactory) -> None:
    async with harness_with(models=ORIGINAL_MODELS, default_model="dall-e-3") as setup:
        anonymous, _token = await setup.new_key("agents", limits=KeyLimits(rate_limit_per_minute=1))
    async with (
        harness_with(models=ORIGINAL_MODELS, default_model="dall-e-3", oig_anonymous_key=anonymous.handle) as h,
        oig_client(h) as oig,
    ):
        assert (await oig.post("/generate", json={"prompt": "one"})).status_code == 200
        limited = await oig.post("/generate", json={"prompt": "two"})
    assert_legacy_error(limited, 429, "RATE_LIMIT_EXCEEDED")
    assert int(limited.headers["retry-after"]) > 0


@pytest.mark.parametrize("problem", ["unknown", "disabled"])
async def test_an_unusable_anonymous_key_stops_the_start(harness_with: HarnessFactory, problem: str) -> None:
    handle = "key_doesnotexist"
    if problem == "disabled":
        async with harness_with() as setup:
            key, _token = await setup.new_key("off")
            handle = key.handle
            async with setup.app.state.services.sessions() as session, session.begin():
                row = await session.get(type(key), key.id)
                assert row is not None
                row.enabled = False
    with pytest.raises(RuntimeError, match=f"IMAGEGATE_OIG_ANONYMOUS_KEY={handle}: ") as refused:
        async with harness_with(oig_anonymous_key=handle):
            pass
    assert ("no key has that handle" if problem == "unknown" else "is disabled") in str(refused.value)


async def test_second_listener_serves_only_this_api_at_its_root(original: Harness) -> None:
    headers = await original.auth()
    async with oig_client(original) as oig:
        health = await oig.get("/health")
        assert health.status_code == 200
        body = health.json()
        assert set(body) == {"status", "api_key_configured", "timestamp"}
        assert (body["status"], body["api_key_configured"]) == ("healthy", True)
        assert "+" not in body["timestamp"]
        assert len(body["timestamp"].rsplit(".", 1)[1]) == 6
        assert_legacy_error(await oig.get("/v1/images/jobs", headers=headers), 404, "HTTP_ERROR")
        assert_legacy_error(await oig.get("/admin/login"), 404, "HTTP_ERROR")
        assert_legacy_error(await oig.get("/generate", headers=headers), 405, "HTTP_ERROR")
        assert_legacy_error(await oig.put("/images/x", headers=headers), 405, "HTTP_ERROR")
        made = await oig.post("/generate", json={"prompt": "on the second listener"}, headers=headers)
        assert made.status_code == 200
    main_health = (await original.client.get("/health")).json()
    assert main_health["status"] == "ok"
    assert (await original.client.get(made.json()["images"][0]["url"], headers=headers)).status_code == 200
    native_missing = await original.client.get("/generated/nothing-here.png")
    assert native_missing.json()["error"]["code"] == "not_found"


async def test_unrouted_original_model_is_503_before_validation(harness: Harness) -> None:
    headers = await harness.auth()
    async with oig_client(harness) as oig:
        health = (await oig.get("/health")).json()
        assert health["api_key_configured"] is False
        for body in ({}, {"prompt": "x"}, {"prompt": "x", "model": "dall-e-2"}):
            response = await oig.post("/generate", json=body, headers=headers)
            assert_legacy_error(
                response, 503, "SERVICE_UNAVAILABLE", "Image generation service not properly configured"
            )
        other = await oig.post(
            "/generate", json={"prompt": "x", "model": "fake-model", "size": "64x64"}, headers=headers
        )
        assert other.status_code == 200, other.text
        assert other.json()["images"][0]["size"] == "64x64"
        unknown = await oig.post("/generate", json={"prompt": "x", "model": "gpt-9"}, headers=headers)
    assert_legacy_error(unknown, 400, "VALIDATION_ERROR", "Invalid model. Supported models: demo, fake-model")


async def test_generation_failure_is_400_generation_error(original: Harness) -> None:
    response = await original.client.post("/generate", json={"prompt": "fail: please"}, headers=await original.auth())
    assert_legacy_error(response, 400, "GENERATION_ERROR", "The fake backend refused this prompt.")
    crash = await original.client.post("/generate", json={"prompt": "crash: now"}, headers=await original.auth())
    assert_legacy_error(crash, 400, "GENERATION_ERROR")
    assert "sk-upstream-secret" not in crash.text


async def test_wait_running_out_is_202_pending_and_idempotency_collects_the_images(
    harness_with: HarnessFactory,
) -> None:
    async with harness_with(models=ORIGINAL_MODELS, default_model="dall-e-3", wait_timeout_seconds=0.3) as h:
        headers = {**(await h.auth()), "Idempotency-Key": "lake-1"}
        body = {"prompt": "gate: slow lake"}
        pending = await h.client.post("/generate", json=body, headers=headers)
        assert pending.status_code == 202, pending.text
        assert pending.json()["status"] == "pending"
        assert pending.headers["retry-after"] == "5"  # when to send the request again
        job_id = pending.json()["job_id"]
        h.fake.open("gate: slow lake")
        again = await h.client.post("/generate", json=body, headers=headers)
        assert again.status_code == 200, again.text
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["job_id"] == job_id
        assert len(again.json()["images"]) == 1
        assert len(h.fake.requests) == 1


async def test_body_over_the_limit_is_413(harness_with: HarnessFactory) -> None:
    async with harness_with(models=ORIGINAL_MODELS, default_model="dall-e-3", max_body_bytes=1024) as h:
        headers = await h.auth()
        response = await h.client.post("/generate", json={"prompt": "x" * 2000}, headers=headers)
        assert_legacy_error(response, 413, "HTTP_ERROR")
        async with oig_client(h) as oig:
            assert_legacy_error(await oig.post("/generate", json={"prompt": "x" * 2000}), 413, "HTTP_ERROR")


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    """A fake OpenAI server behind the openai backend."""
    with running_fake_openai() as fake:
        yield fake


@asynccontextmanager
async def through_openai(harness_with: HarnessFactory, upstream: FakeOpenAI, **options: Any) -> AsyncIterator[Harness]:
    """dall-e-2 and dall-e-3 routed to the openai backend, which calls the fake upstream."""
    backend = BackendConfig(
        type="openai",
        options={"base_url": f"{upstream.url}/v1", "api_key": "sk-test-secret", "max_retries": 0, **options},
    )
    upstream.requests.clear()
    async with harness_with(
        backends={**fake_backends(), "openai": backend},
        models={"dall-e-2": "openai", "dall-e-3": "openai"},
        default_model="dall-e-3",
    ) as running:
        yield running


async def test_provider_errors_in_the_originals_codes(harness_with: HarnessFactory, upstream: FakeOpenAI) -> None:
    async with through_openai(harness_with, upstream) as h:
        headers = await h.auth()
        credentials = await h.client.post("/generate", json={"prompt": "bad-credentials"}, headers=headers)
        assert_legacy_error(credentials, 500, "SERVICE_ERROR", "Image generation service configuration error")
        assert "sk-" not in credentials.text
        limited = await h.client.post("/generate", json={"prompt": "rate-limited"}, headers=headers)
        assert_legacy_error(limited, 429, "RATE_LIMIT_EXCEEDED")
        assert limited.headers["retry-after"] == "7"
        policy = await h.client.post("/generate", json={"prompt": "policy"}, headers=headers)
        assert_legacy_error(policy, 400, "GENERATION_ERROR")
        assert "safety system" in policy.json()["error"]


async def test_dall_e_3_sends_its_options_and_counts_as_sequential_calls(
    harness_with: HarnessFactory, upstream: FakeOpenAI
) -> None:
    async with through_openai(harness_with, upstream) as h:
        body = {"prompt": "a fox", "quality": "hd", "style": "natural", "count": 2, "size": "1024x1792"}
        response = await h.client.post("/generate", json=body, headers=await h.auth())
        assert response.status_code == 200, response.text
        assert response.json()["images"][0]["prompt"] == "a fox (revised)"
    calls = [call.fields for call in upstream.requests]
    assert [(c["model"], c["n"], c["quality"], c["style"], c["size"]) for c in calls] == [
        ("dall-e-3", 1, "hd", "natural", "1024x1792")
    ] * 2


async def test_dall_e_names_routed_to_a_gpt_image_model(harness_with: HarnessFactory, upstream: FakeOpenAI) -> None:
    async with through_openai(harness_with, upstream, upstream_model="gpt-image-1") as h:
        headers = await h.auth()
        body = {"prompt": "a fox", "quality": "hd", "style": "vivid", "size": "1792x1024"}
        response = await h.client.post("/generate", json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["images"][0]["size"] == "1792x1024"  # what the client asked, as the original said
        plain = await h.client.post("/generate", json={"prompt": "plain"}, headers=headers)
        assert plain.status_code == 200, plain.text
    first, second = (call.fields for call in upstream.requests)
    assert (first["model"], first["quality"], first["size"], "style" in first) == (
        "gpt-image-1",
        "high",
        "1536x1024",
        False,
    )
    assert (second["model"], second.get("quality"), second["size"]) == ("gpt-image-1", None, "1024x1024")


async def test_a_nul_in_the_url_is_a_400_on_the_second_listener_too(original: Harness) -> None:
    headers = await original.auth()
    async with oig_client(original) as oig:
        for url in ("/images/abc%00def", "/images/x?y=%00"):
            assert_legacy_error(await oig.get(url, headers=headers), 400, "HTTP_ERROR")


async def test_only_a_request_with_an_idempotency_key_is_fingerprinted(
    original: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    fingerprinted = count_fingerprints(monkeypatch)
    auth = await original.auth()
    plain = await original.client.post("/generate", json={"prompt": "no key"}, headers=auth)
    assert plain.status_code == 200, plain.text
    assert fingerprinted == []
    keyed = await original.client.post("/generate", json={"prompt": "a key"}, headers={**auth, "Idempotency-Key": "k"})
    assert keyed.status_code == 200, keyed.text
    assert fingerprinted == ["oig.generate"]
