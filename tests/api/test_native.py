"""The native API: generate, jobs, and a clear 4xx for every bad input."""

from __future__ import annotations

from typing import Any

import pytest

from imagegate.jobs.models import Job
from tests.fakes.backends import tiny_png
from tests.helpers import ASYNC, GENERATE, Harness, HarnessFactory, b64, fake_backends, wait_status


async def post(harness: Harness, body: Any, headers: dict[str, str], **kwargs: Any) -> Any:
    """POST to the generate endpoint."""
    return await harness.client.post(GENERATE, json=body, headers=headers, **kwargs)


async def test_generate_waits_and_returns_downloadable_images(harness: Harness) -> None:
    auth = await harness.auth()
    response = await post(harness, {"prompt": "a fox", "size": "32x16", "count": 2}, auth)
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "succeeded"
    assert job["id"].startswith("img_")
    assert job["model"] == "fake-model"
    assert [(i["width"], i["height"], i["format"]) for i in job["images"]] == [(32, 16, "png")] * 2
    download = await harness.client.get(job["images"][0]["url"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/png"
    assert download.content == tiny_png(size=(32, 16))
    assert "immutable" in download.headers["cache-control"]
    again = await harness.client.get(job["images"][0]["url"], headers={"If-None-Match": download.headers["etag"]})
    assert again.status_code == 304


async def test_urls_use_public_base_url_when_configured(harness: Harness) -> None:
    harness.app.state.services.settings.public_base_url = "https://img.example.test/gate"
    response = await post(harness, {"prompt": "x"}, await harness.auth())
    assert response.json()["images"][0]["url"].startswith("https://img.example.test/gate/generated/")
    assert response.json()["status_url"].startswith("https://img.example.test/gate/v1/images/jobs/img_")


async def test_prefer_respond_async_answers_202_and_the_job_goes_on(harness: Harness) -> None:
    auth = await harness.auth()
    response = await post(harness, {"prompt": "gate:async"}, {**auth, **ASYNC})
    assert response.status_code == 202
    assert response.headers["preference-applied"] == "respond-async"
    assert response.headers["retry-after"] == "5"  # when to poll status_url
    job = response.json()
    assert response.headers["location"] == job["status_url"]
    await harness.fake.wait_started(1)
    harness.fake.open("gate:async")
    await wait_status(harness, job["id"], auth, "succeeded")
    status = await harness.client.get(job["status_url"], headers=auth)
    assert len(status.json()["images"]) == 1


async def test_wait_timeout_answers_202_not_an_error(harness: Harness) -> None:
    harness.app.state.services.settings.wait_timeout_seconds = 0.3
    auth = await harness.auth()
    response = await post(harness, {"prompt": "gate:slow"}, auth)
    assert response.status_code == 202
    assert response.json()["status"] in ("queued", "running")
    assert response.headers["retry-after"] == "5"
    harness.fake.open("gate:slow")


async def test_backend_failure_is_reported_with_the_job_id(harness: Harness) -> None:
    auth = await harness.auth()
    response = await post(harness, {"prompt": "fail: no"}, auth)
    assert response.status_code == 502
    body = response.json()
    assert body["status"] == "failed"
    assert body["error_code"] == "backend_error"
    assert body["id"].startswith("img_")
    assert isinstance(body["error"], str)
    assert "refused" in body["error"]
    assert body["detail"] == body["error"]  # FastAPI's shape, which codex-image-service clients read
    polled = await harness.client.get(body["status_url"], headers=auth)
    assert polled.json()["error"] == body["error"]
    assert polled.json()["error_code"] == "backend_error"


@pytest.mark.parametrize("prompt", ["crash: boom", "garbage: bytes", "empty: none"])
async def test_backend_bugs_never_leak_details(harness: Harness, prompt: str) -> None:
    auth = await harness.auth()
    response = await post(harness, {"prompt": prompt}, auth)
    assert response.status_code == 502
    assert "secret" not in response.text
    assert "/srv" not in response.text
    job = await harness.client.get(f"/v1/images/jobs/{response.json()['id']}", headers=auth)
    assert job.json()["status"] == "failed"
    assert "secret" not in job.text


def _bad_inputs() -> list[tuple[str, dict[str, Any], str, str, str]]:
    """(case, body, param, error code, what the message tells the caller); every one is a 400."""
    png = b64(tiny_png())
    bad_base64 = "is not valid base64 (plain base64 or a data: URL)"
    return [
        ("empty prompt", {"prompt": "   "}, "prompt", "invalid_request", "prompt must not be empty"),
        ("over-long prompt", {"prompt": "x" * 32_001}, "prompt", "invalid_request", "the limit is 32000"),
        ("NUL in prompt", {"prompt": "a\u0000b"}, "prompt", "invalid_request", "contains a NUL character"),
        ("prompt not a string", {"prompt": 123}, "prompt", "invalid_request", "should be a valid string"),
        ("missing prompt", {"size": "64x64"}, "prompt", "invalid_request", "prompt is required"),
        ("unknown model", {"prompt": "x", "model": "nope"}, "model", "unknown_model", "Unknown model 'nope'"),
        ("malformed size", {"prompt": "x", "size": "big"}, "size", "invalid_request", "use WIDTHxHEIGHT"),
        ("size too small", {"prompt": "x", "size": "8x8"}, "size", "invalid_request", "between 16 and 4096"),
        ("size too large", {"prompt": "x", "size": "5000x5000"}, "size", "invalid_request", "between 16 and 4096"),
        ("count zero", {"prompt": "x", "count": 0}, "count", "invalid_request", "between 1 and 10"),
        ("count too high", {"prompt": "x", "count": 11}, "count", "invalid_request", "between 1 and 10"),
        ("count not a number", {"prompt": "x", "count": "many"}, "count", "invalid_request", "valid integer"),
        ("bad quality", {"prompt": "x", "quality": "ultra"}, "quality", "invalid_request", "one of: auto, low"),
        ("bad output format", {"prompt": "x", "output_format": "bmp"}, "output_format", "invalid_request", "png, jpeg"),
        (
            "invalid base64",
            {"prompt": "x", "reference_images_base64": ["%%%"]},
            "reference_images_base64[0]",
            "invalid_request",
            bad_base64,
        ),
        (
            "not an image",
            {"prompt": "x", "reference_image_base64": b64(b"hello world")},
            "reference_image_base64",
            "invalid_image",
            "is not a readable image",
        ),
        (
            "too many references",
            {"prompt": "x", "reference_images_base64": [png] * 17},
            "reference_images_base64",
            "invalid_request",
            "17 reference images given; the limit is 16",
        ),
        (
            "a bad plural beside a good alias (the plural wins)",
            {"prompt": "x", "reference_images_base64": ["%%%"], "reference_image_base64": png},
            "reference_images_base64[0]",
            "invalid_request",
            bad_base64,
        ),
    ]


@pytest.mark.parametrize(("case", "body", "param", "code", "says"), _bad_inputs(), ids=[c[0] for c in _bad_inputs()])
async def test_bad_input_gets_a_clear_4xx(
    harness: Harness, case: str, body: dict[str, Any], param: str, code: str, says: str
) -> None:
    response = await post(harness, body, await harness.auth())
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code)
    assert says in error["message"]
    assert harness.fake.requests == []


async def test_unknown_model_lists_the_available_ones(harness: Harness) -> None:
    response = await post(harness, {"prompt": "x", "model": "dall-e-9"}, await harness.auth())
    assert "demo" in response.json()["error"]["message"]
    assert "fake-model" in response.json()["error"]["message"]


async def test_non_json_body_is_a_400(harness: Harness) -> None:
    response = await harness.client.post(
        GENERATE, content=b"{not json", headers={**await harness.auth(), "content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


async def test_reference_over_the_byte_limit_is_413(harness: Harness) -> None:
    harness.app.state.services.settings.max_reference_bytes = 2048
    big = tiny_png(size=(300, 300), colour=(1, 2, 3)) + b"\0" * 3000
    response = await post(harness, {"prompt": "x", "reference_images_base64": [b64(big)]}, await harness.auth())
    assert response.status_code == 413
    assert response.json()["error"]["param"] == "reference_images_base64[0]"


async def test_body_over_the_limit_is_refused_while_reading(harness: Harness) -> None:
    auth = await harness.auth()
    limit = harness.app.state.services.settings.max_body_bytes
    declared = await harness.client.post(
        GENERATE, content=b"x" * (limit + 1), headers={**auth, "content-type": "application/json"}
    )
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "payload_too_large"

    chunks_sent = 0

    async def stream() -> Any:
        nonlocal chunks_sent
        chunk = b" " * (1024 * 1024)
        for _ in range(limit // len(chunk) + 10):
            chunks_sent += 1
            yield chunk

    streamed = await harness.client.post(
        GENERATE, content=stream(), headers={**auth, "content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert streamed.json()["error"]["code"] == "payload_too_large"


async def test_references_go_to_storage_and_reach_the_backend(harness: Harness) -> None:
    refs = [tiny_png((255, 0, 0)), tiny_png((0, 0, 255))]
    response = await post(
        harness,
        {"prompt": "edit", "reference_images_base64": [f"data:image/png;base64,{b64(r)}" for r in refs]},
        await harness.auth(),
    )
    assert response.status_code == 200, response.text
    assert response.json()["reference_image_count"] == 2
    assert [r.data for r in harness.fake.requests[0].references] == refs
    stored = sorted((harness.app.state.services.settings.data_dir / "files" / "inputs").rglob("*.png"))
    assert [p.read_bytes() for p in stored] == refs
    async with harness.app.state.services.sessions() as session:
        job = await session.get(Job, 1)
    assert job is not None
    assert "base64" not in str(job.params)
    assert job.prompt == "edit"


async def test_single_reference_alias(harness: Harness) -> None:
    response = await post(harness, {"prompt": "edit", "reference_image_base64": b64(tiny_png())}, await harness.auth())
    assert response.status_code == 200
    assert len(harness.fake.requests[0].references) == 1


async def test_unknown_fields_are_ignored_as_by_the_original(harness: Harness) -> None:
    body = {"prompt": "a fox", "colour": "red", "callback_url": "http://x.invalid/", "count": 1}
    response = await post(harness, body, await harness.auth())
    assert response.status_code == 200, response.text
    assert harness.fake.requests[0].prompt == "a fox"


async def test_the_plural_reference_field_wins_over_the_alias(harness: Harness) -> None:
    plural = [tiny_png((0, 255, 0)), tiny_png((0, 0, 255))]
    body = {"prompt": "edit", "reference_images_base64": [b64(r) for r in plural], "reference_image_base64": "%%%"}
    response = await post(harness, body, await harness.auth())
    assert response.status_code == 200, response.text
    assert [r.data for r in harness.fake.requests[0].references] == plural


async def test_sixteen_references_are_accepted_by_default(harness: Harness) -> None:
    refs = [b64(tiny_png((i * 15, 0, 0))) for i in range(16)]
    response = await post(harness, {"prompt": "edit", "reference_images_base64": refs}, await harness.auth())
    assert response.status_code == 200, response.text
    assert len(harness.fake.requests[0].references) == 16


async def test_async_submit_answers_202_with_location_and_the_job_goes_on(harness: Harness) -> None:
    auth = await harness.auth()
    response = await harness.client.post("/v1/images/jobs", json={"prompt": "gate:submitted"}, headers=auth)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["id"].startswith("img_")
    assert job["status"] == "queued"
    assert job["error"] is None
    assert job["error_code"] is None
    assert response.headers["location"] == job["status_url"]
    assert response.headers["retry-after"] == "5"
    harness.fake.open("gate:submitted")
    await wait_status(harness, job["id"], auth, "succeeded")
    status = await harness.client.get(response.headers["location"], headers=auth)
    assert len(status.json()["images"]) == 1


async def test_async_submit_honours_idempotency_and_the_key_s_limits(harness: Harness) -> None:
    auth = await harness.auth(max_concurrent_jobs=1)
    first = await harness.client.post(
        "/v1/images/jobs", json={"prompt": "gate:once"}, headers={**auth, "Idempotency-Key": "k1"}
    )
    again = await harness.client.post(
        "/v1/images/jobs", json={"prompt": "gate:once"}, headers={**auth, "Idempotency-Key": "k1"}
    )
    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    second = await harness.client.post("/v1/images/jobs", json={"prompt": "another"}, headers=auth)
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "concurrency_limit_exceeded"
    bad = await harness.client.post("/v1/images/jobs", json={"prompt": " "}, headers=auth)
    assert bad.status_code == 400
    harness.fake.open("gate:once")


async def test_async_submit_on_a_full_queue_is_503_as_the_original(harness_with: HarnessFactory) -> None:
    async with harness_with(backends=fake_backends(concurrency=1), queue_max_size=1) as harness:
        auth = await harness.auth()
        await post(harness, {"prompt": "gate:running"}, {**auth, **ASYNC})
        await harness.fake.wait_started(1)
        queued = await harness.client.post("/v1/images/jobs", json={"prompt": "q1"}, headers=auth)
        assert queued.status_code == 202
        full = await harness.client.post("/v1/images/jobs", json={"prompt": "q2"}, headers=auth)
        assert full.status_code == 503
        assert full.json()["error"]["code"] == "queue_full"
        assert full.headers["retry-after"].isdigit()
        harness.fake.open("gate:running")


async def test_jobs_are_private_to_their_key(harness: Harness) -> None:
    owner, other = await harness.auth("owner"), await harness.auth("other")
    job = (await post(harness, {"prompt": "mine"}, owner)).json()
    assert (await harness.client.get(f"/v1/images/jobs/{job['id']}", headers=owner)).status_code == 200
    for method, path in [
        ("GET", f"/v1/images/jobs/{job['id']}"),
        ("POST", f"/v1/images/jobs/{job['id']}/cancel"),
        ("DELETE", f"/v1/images/jobs/{job['id']}"),
    ]:
        response = await harness.client.request(method, path, headers=other)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["code"] == "not_found"
    listed = await harness.client.get("/v1/images/jobs", headers=other)
    assert listed.json()["data"] == []


async def test_list_jobs_is_paginated_newest_first(harness: Harness) -> None:
    auth = await harness.auth()
    ids = [(await post(harness, {"prompt": f"p{i}"}, {**auth, **ASYNC})).json()["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    for _page in ids:  # 3 pages are enough; a cursor that never runs out ends here and fails below
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await harness.client.get("/v1/images/jobs", params=params, headers=auth)).json()
        seen += [job["id"] for job in page["data"]]
        cursor = page["next_cursor"]
        assert page["has_more"] == (cursor is not None)
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    bad = await harness.client.get("/v1/images/jobs", params={"limit": 500}, headers=auth)
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "limit"
    junk = await harness.client.get("/v1/images/jobs", params={"cursor": "junk"}, headers=auth)
    assert junk.status_code == 400  # a parameter the caller must fix, not a missing resource
    assert (junk.json()["error"]["param"], junk.json()["error"]["code"]) == ("cursor", "invalid_request")


async def test_cancel_a_queued_job(harness_with: HarnessFactory) -> None:
    async with harness_with(backends=fake_backends(concurrency=1)) as harness:
        auth = await harness.auth()
        await post(harness, {"prompt": "gate:first"}, {**auth, **ASYNC})
        await harness.fake.wait_started(1)
        queued = (await post(harness, {"prompt": "second"}, {**auth, **ASYNC})).json()
        assert queued["status"] == "queued"
        cancelled = await harness.client.post(f"/v1/images/jobs/{queued['id']}/cancel", headers=auth)
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
        again = await harness.client.post(f"/v1/images/jobs/{queued['id']}/cancel", headers=auth)
        assert again.status_code == 409
        harness.fake.open("gate:first")
        assert harness.fake.started == ["gate:first"]


async def test_cancel_a_running_job(harness: Harness) -> None:
    auth = await harness.auth()
    job = (await post(harness, {"prompt": "gate:forever"}, {**auth, **ASYNC})).json()
    await harness.fake.wait_started(1)
    response = await harness.client.post(f"/v1/images/jobs/{job['id']}/cancel", headers=auth)
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["error_code"] == "cancelled"
    assert response.json()["error"] == "Cancelled by the caller while it was running."


async def test_delete_removes_the_job_and_its_files(harness: Harness) -> None:
    auth = await harness.auth()
    job = (await post(harness, {"prompt": "x", "reference_image_base64": b64(tiny_png())}, auth)).json()
    files = harness.app.state.services.settings.data_dir / "files"
    assert list(files.rglob("*.png"))
    deleted = await harness.client.delete(f"/v1/images/jobs/{job['id']}", headers=auth)
    assert deleted.status_code == 200
    assert deleted.json()["deleted"] is True
    assert not list(files.rglob("*.png"))
    assert (await harness.client.get(job["images"][0]["url"])).status_code == 404
    assert (await harness.client.get(f"/v1/images/jobs/{job['id']}", headers=auth)).status_code == 404


async def test_delete_a_running_job_is_a_conflict(harness: Harness) -> None:
    auth = await harness.auth()
    job = (await post(harness, {"prompt": "gate:busy"}, {**auth, **ASYNC})).json()
    await harness.fake.wait_started(1)
    response = await harness.client.delete(f"/v1/images/jobs/{job['id']}", headers=auth)
    assert response.status_code == 409
    assert "cancel" in response.json()["error"]["message"]
    harness.fake.open("gate:busy")


async def test_unknown_route_and_method_use_the_error_shape(harness: Harness) -> None:
    missing = await harness.client.get("/v1/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = await harness.client.get(GENERATE)
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("content", [b"", b"[1, 2]", b'"prompt"', b"null"])
async def test_a_body_that_is_not_an_object_is_a_400(harness: Harness, content: bytes) -> None:
    response = await harness.client.post(
        GENERATE, content=content, headers={**await harness.auth(), "content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert "JSON" in response.json()["error"]["message"]
    assert "None" not in response.json()["error"]["message"]


async def test_the_models_list_gives_the_keys_models_with_their_sizes(harness: Harness) -> None:
    response = await harness.client.get("/v1/images/models", headers=await harness.auth(allowed_models=["demo"]))
    assert response.status_code == 200
    assert response.json()["data"] == [
        {"id": "demo", "backend": "demo", "default": False, "sizes": None, "max_side": 4096, "can_describe": True}
    ]
    everything = await harness.client.get("/v1/images/models", headers=await harness.auth())
    assert [(m["id"], m["default"]) for m in everything.json()["data"]] == [("demo", False), ("fake-model", True)]


async def test_a_job_can_be_long_polled_until_it_finishes(harness: Harness) -> None:
    auth = await harness.auth()
    job = (await harness.client.post(GENERATE, json={"prompt": "gate:poll"}, headers={**auth, **ASYNC})).json()
    await harness.fake.wait_started(1)
    running = await harness.client.get(f"/v1/images/jobs/{job['id']}?wait=0.1", headers=auth)
    assert running.json()["status"] == "running"
    harness.fake.open("gate:poll")
    finished = await harness.client.get(f"/v1/images/jobs/{job['id']}?wait=60", headers=auth)
    assert finished.json()["status"] == "succeeded"
    too_long = await harness.client.get(f"/v1/images/jobs/{job['id']}?wait=61", headers=auth)
    assert too_long.status_code == 400


async def test_an_edit_takes_a_mask(harness: Harness) -> None:
    body = {"prompt": "fill it", "reference_images_base64": [b64(tiny_png())], "mask_base64": b64(tiny_png())}
    response = await harness.client.post(GENERATE, json=body, headers=await harness.auth())
    assert response.status_code == 200, response.text
    assert harness.fake.requests[-1].mask is not None
    alone = await harness.client.post(
        GENERATE, json={"prompt": "x", "mask_base64": b64(tiny_png())}, headers=await harness.auth()
    )
    assert alone.status_code == 400
    assert "A mask needs an image to edit" in alone.json()["error"]["message"]


async def test_a_json_body_sent_as_a_form_is_told_which_content_type_to_use(harness: Harness) -> None:
    auth = await harness.auth()
    form = {"Content-Type": "application/x-www-form-urlencoded"}  # what curl -d sends by default
    response = await harness.client.post("/v1/images/generate", content=b'{"prompt": "x"}', headers={**auth, **form})
    assert response.status_code == 400
    assert "Content-Type: application/json" in response.json()["error"]["message"]
