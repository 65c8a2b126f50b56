"""POST /v1/vision: the demo backend's answer, the limits, and its place beside the image queue."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from sqlalchemy import select

from imagegate.backends.models import BackendUsage
from imagegate.jobs.models import Job
from tests.fakes.backends import tiny_png
from tests.helpers import Harness, HarnessFactory, fake_backends, submit, wait_status

VISION = "/v1/vision"
ASYNC = {"Prefer": "respond-async"}


def b64(data: bytes) -> str:
    """Plain base64 text."""
    return base64.b64encode(data).decode()


async def ask(harness: Harness, body: dict[str, Any], headers: dict[str, str]) -> Any:
    """POST to the vision endpoint."""
    return await harness.client.post(VISION, json=body, headers=headers)


async def recorded(harness: Harness, request_id: str) -> Job:
    """The vision request's row."""
    async with harness.app.state.services.sessions() as session:
        job: Job | None = await session.scalar(select(Job).where(Job.id == request_id))
    assert job is not None
    return job


async def test_demo_names_each_image_s_size_and_colour(harness: Harness) -> None:
    auth = await harness.auth()
    images = [
        b64(tiny_png((230, 10, 10), size=(64, 32))),
        "data:image/png;base64," + b64(tiny_png((0, 0, 250), (20, 40))),
    ]
    body = {"prompt": "What is in these?", "images_base64": images, "model": "demo", "detail": "high"}
    response = await ask(harness, body, auth)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["id"].startswith("vis_")
    lines = answer["text"].splitlines()
    assert "64x32" in lines[0]
    assert "red" in lines[0]
    assert "20x40" in lines[1]
    assert "blue" in lines[1]
    again = await ask(harness, body, auth)
    assert again.json()["text"] == answer["text"]  # deterministic
    job = await recorded(harness, answer["id"])
    assert (job.kind, job.status, job.backend, job.count) == ("vision", "succeeded", "demo", 0)
    assert job.result == {"text": answer["text"]}
    assert len(job.params["inputs"]) == 2
    listed = await harness.client.get("/v1/images/jobs", headers=auth)
    assert listed.json()["data"] == []  # the image job list shows image jobs only


async def test_zero_or_seventeen_images_are_a_4xx(harness: Harness) -> None:
    auth = await harness.auth()
    for images in ([], [b64(tiny_png())] * 17):
        response = await ask(harness, {"prompt": "look", "images_base64": images, "model": "demo"}, auth)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "images_base64"
        assert str(len(images)) in response.json()["detail"]


async def test_bad_inputs_are_a_clear_4xx(harness: Harness) -> None:
    auth = await harness.auth()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"prompt": " ", "images_base64": [b64(tiny_png())]}, "prompt"),
        ({"prompt": "look", "images_base64": ["%%%"]}, "images_base64[0]"),
        ({"prompt": "look", "images_base64": [b64(tiny_png()), b64(b"text")]}, "images_base64[1]"),
        ({"images_base64": [b64(tiny_png())]}, "prompt"),
        ({"prompt": "look", "images_base64": [b64(tiny_png())], "model": "nope"}, "model"),
    ]
    for body, param in cases:
        response = await ask(harness, {"model": "demo", **body}, auth)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["param"] == param


async def test_no_key_is_401(harness: Harness) -> None:
    response = await ask(harness, {"prompt": "look", "images_base64": [b64(tiny_png())], "model": "demo"}, {})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"


async def test_a_key_without_the_vision_scope_is_refused(harness: Harness) -> None:
    auth = await harness.auth(scopes=["generate", "read"])
    response = await ask(harness, {"prompt": "look", "images_base64": [b64(tiny_png())], "model": "demo"}, auth)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"


async def test_a_model_whose_backend_cannot_read_images_is_a_400(harness: Harness) -> None:
    harness.fake.can_describe = False  # type: ignore[attr-defined]
    response = await ask(harness, {"prompt": "look", "images_base64": [b64(tiny_png())]}, await harness.auth())
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"
    assert "cannot read images" in response.json()["error"]["message"]
    assert harness.fake.vision_requests == []


async def test_an_empty_answer_is_a_502_never_a_200(harness: Harness) -> None:
    response = await ask(
        harness, {"prompt": "empty: nothing", "images_base64": [b64(tiny_png())]}, await harness.auth()
    )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "backend_error"
    async with harness.app.state.services.sessions() as session:
        job = await session.scalar(select(Job).where(Job.kind == "vision"))
    assert job is not None
    assert (job.status, job.error_code) == ("failed", "backend_error")


async def test_failures_are_recorded_and_never_leak(harness: Harness) -> None:
    auth = await harness.auth()
    failed = await ask(harness, {"prompt": "fail: no", "images_base64": [b64(tiny_png())]}, auth)
    assert failed.status_code == 502
    crashed = await ask(harness, {"prompt": "crash: boom", "images_base64": [b64(tiny_png())]}, auth)
    assert crashed.status_code == 502
    assert "secret" not in crashed.text
    assert "/srv" not in crashed.text
    async with harness.app.state.services.sessions() as session:
        rows = (await session.scalars(select(Job).where(Job.kind == "vision"))).all()
        used = (await session.scalars(select(BackendUsage))).all()
    assert sorted(r.status for r in rows) == ["failed", "failed"]
    assert {u.job_id for u in used} == {r.id for r in rows}  # per-account usage is recorded too


async def test_vision_goes_before_queued_image_jobs_within_the_backend_s_concurrency(
    harness_with: HarnessFactory,
) -> None:
    async with harness_with(backends=fake_backends(concurrency=1)) as harness:
        auth = await harness.auth()
        await harness.client.post("/v1/images/generate", json={"prompt": "gate:running"}, headers={**auth, **ASYNC})
        await harness.fake.wait_started(1)
        await harness.client.post("/v1/images/generate", json={"prompt": "queued"}, headers={**auth, **ASYNC})
        pending = asyncio.create_task(ask(harness, {"prompt": "gate:look", "images_base64": [b64(tiny_png())]}, auth))
        await _wait_for_waiting_vision(harness)
        harness.fake.open("gate:running")
        await harness.fake.wait_started(2)
        assert harness.fake.started == ["gate:running", "gate:look"]  # not behind the queued image job
        harness.fake.open("gate:look")
        response = await pending
        assert response.status_code == 200, response.text
        await harness.fake.wait_started(3)
        assert harness.fake.max_running == 1


async def test_no_free_slot_within_the_wait_timeout_is_a_503(harness_with: HarnessFactory) -> None:
    async with harness_with(backends=fake_backends(concurrency=1), wait_timeout_seconds=0.5) as harness:
        auth = await harness.auth()
        await harness.client.post("/v1/images/generate", json={"prompt": "gate:busy"}, headers={**auth, **ASYNC})
        await harness.fake.wait_started(1)
        response = await ask(harness, {"prompt": "look", "images_base64": [b64(tiny_png())]}, auth)
        assert response.status_code == 503
        assert response.headers["retry-after"].isdigit()
        job = await recorded(harness, (await _vision_ids(harness))[0])
        assert (job.status, job.error_code) == ("failed", "unavailable")
        harness.fake.open("gate:busy")
        # The reservation went with the failed request: the next job runs. Asynchronous, so the 0.5 s
        # wait timeout this test needs does not decide the answer on a busy machine.
        await wait_status(harness, await submit(harness, "next", auth), auth, "succeeded")


async def _vision_ids(harness: Harness) -> list[str]:
    async with harness.app.state.services.sessions() as session:
        return list((await session.scalars(select(Job.id).where(Job.kind == "vision"))).all())


async def _wait_for_waiting_vision(harness: Harness) -> None:
    async with asyncio.timeout(10):
        while True:
            async with harness.app.state.services.sessions() as session:
                found = await session.scalar(select(Job.id).where(Job.kind == "vision", Job.status == "queued"))
            if found is not None:
                return
            await asyncio.sleep(0.02)
