"""The OpenAI-compatible surface, driven by the official openai SDK through the ASGI transport."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai
import pytest
from openai import AsyncOpenAI
from PIL import Image

from imagegate.jobs.models import JobInput
from tests.fakes.backends import tiny_png
from tests.helpers import Harness


@pytest.fixture
async def sdk(harness: Harness) -> AsyncIterator[AsyncOpenAI]:
    """The real SDK pointed at the app, with a fresh key."""
    _key, token = await harness.new_key("sdk")
    client = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=harness.app), base_url="http://testserver")
    async with AsyncOpenAI(base_url="http://testserver/v1", api_key=token, http_client=client, max_retries=0) as api:
        yield api


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of encoded image bytes."""
    with Image.open(io.BytesIO(data)) as image:
        return image.size


async def test_generate_b64_json_by_default(sdk: AsyncOpenAI) -> None:
    result = await sdk.images.generate(prompt="a lighthouse", size="64x32", n=2)
    assert isinstance(result, openai.types.ImagesResponse)
    assert result.data is not None
    assert len(result.data) == 2
    assert result.data[0].b64_json is not None
    assert png_size(base64.b64decode(result.data[0].b64_json)) == (64, 32)
    assert result.size == "64x32"
    assert result.output_format == "png"
    assert result.model_extra is not None
    assert result.model_extra["job_id"].startswith("img_")


async def test_generate_url_on_any_model(sdk: AsyncOpenAI, harness: Harness) -> None:
    result = await sdk.images.generate(
        prompt="x", model="demo", size="48x48", response_format="url", output_format="webp", quality="high"
    )
    assert result.data is not None
    url = result.data[0].url
    assert url is not None
    assert url.startswith("http://testserver/generated/")
    assert result.quality == "high"
    download = await harness.client.get(url)
    assert download.headers["content-type"] == "image/webp"
    assert png_size(download.content) == (48, 48)


async def test_passthrough_parameters_reach_the_backend(sdk: AsyncOpenAI, harness: Harness) -> None:
    await sdk.images.generate(
        prompt="x", style="vivid", background="opaque", moderation="low", output_compression=80, user="end-user-7"
    )
    params = harness.fake.requests[-1].params
    assert params == {
        "style": "vivid",
        "background": "opaque",
        "moderation": "low",
        "output_compression": 80,
        "user": "end-user-7",
    }
    assert harness.fake.requests[-1].operation == "generate"


async def test_edit_with_several_files_and_a_mask(sdk: AsyncOpenAI, harness: Harness) -> None:
    red, blue = tiny_png((255, 0, 0)), tiny_png((0, 0, 255))
    mask = tiny_png((0, 0, 0))
    result = await sdk.images.edit(
        image=[("red.png", red, "image/png"), ("blue.png", blue, "image/png")],
        mask=("mask.png", mask, "image/png"),
        prompt="blend them",
        size="32x32",
        input_fidelity="high",
    )
    assert result.data is not None
    assert len(result.data) == 1
    request = harness.fake.requests[-1]
    assert [r.data for r in request.references] == [red, blue]
    assert request.mask is not None
    assert request.mask.data == mask
    assert request.params["input_fidelity"] == "high"
    assert request.operation == "edit"
    async with harness.app.state.services.sessions() as session:
        roles = sorted((await session.scalars(JobInput.__table__.select().with_only_columns(JobInput.role))).all())
    assert roles == ["mask", "reference", "reference"]


async def test_edit_with_a_single_file(sdk: AsyncOpenAI, harness: Harness) -> None:
    await sdk.images.edit(image=("in.png", tiny_png(), "image/png"), prompt="one")
    assert len(harness.fake.requests[-1].references) == 1


async def test_edit_json_form_with_data_urls(harness: Harness) -> None:
    auth = await harness.auth()
    data_url = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()
    body = {
        "prompt": "edit",
        "images": [{"image_url": data_url}, {"image_url": data_url}],
        "mask": {"image_url": data_url},
        "response_format": "url",
    }
    response = await harness.client.post("/v1/images/edits", json=body, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["data"][0]["url"].startswith("http://testserver/generated/")
    assert len(harness.fake.requests[-1].references) == 2


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK marks variations deprecated
async def test_variations(sdk: AsyncOpenAI, harness: Harness) -> None:
    result = await sdk.images.create_variation(image=("in.png", tiny_png(), "image/png"), n=2, size="256x256")
    assert result.data is not None
    assert len(result.data) == 2
    assert harness.fake.requests[-1].operation == "variation"


async def test_models_lists_what_the_key_may_use(sdk: AsyncOpenAI, harness: Harness) -> None:
    listed = [model.id async for model in sdk.models.list()]
    assert listed == ["demo", "fake-model"]
    assert (await sdk.models.retrieve("demo")).owned_by == "imagegate:demo"
    with pytest.raises(openai.NotFoundError):
        await sdk.models.retrieve("gpt-nothing")
    limited = await harness.auth("limited", allowed_models=["demo"])
    response = await harness.client.get("/v1/models", headers=limited)
    assert [m["id"] for m in response.json()["data"]] == ["demo"]


async def test_streaming_relays_partial_images_then_completes(sdk: AsyncOpenAI) -> None:
    stream = await sdk.images.generate(prompt="stream me", model="demo", size="64x64", stream=True, partial_images=2)
    events = [event async for event in stream]
    assert [event.type for event in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    partial, completed = events[0], events[-1]
    assert isinstance(partial, openai.types.ImageGenPartialImageEvent)
    assert partial.partial_image_index == 0
    assert isinstance(completed, openai.types.ImageGenCompletedEvent)
    assert png_size(base64.b64decode(completed.b64_json)) == (64, 64)
    assert completed.usage.total_tokens == 0


async def test_streaming_an_edit_without_partials(sdk: AsyncOpenAI) -> None:
    stream = await sdk.images.edit(image=("in.png", tiny_png(), "image/png"), prompt="x", stream=True)
    events = [event async for event in stream]
    assert [event.type for event in events] == ["image_edit.completed"]


async def test_a_failing_stream_raises_the_sdks_error(sdk: AsyncOpenAI) -> None:
    stream = await sdk.images.generate(prompt="fail: nope", stream=True)
    with pytest.raises(openai.APIError, match="refused"):
        async for _event in stream:
            pass


async def test_errors_are_openai_shaped_and_sdk_typed(sdk: AsyncOpenAI, harness: Harness) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        await sdk.images.generate(prompt="x", model="dall-e-9")
    assert bad.value.code == "unknown_model"
    assert bad.value.param == "model"
    assert bad.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as invalid:
        await sdk.images.generate(prompt="x", n=11)
    assert invalid.value.param == "n"
    with pytest.raises(openai.APIStatusError) as failed:
        await sdk.images.generate(prompt="fail: upstream")
    assert failed.value.status_code == 502
    assert failed.value.response.headers["x-should-retry"] == "false"
    assert failed.value.type == "server_error"
    wrong_key = AsyncOpenAI(
        base_url="http://testserver/v1",
        api_key="ig_wrong",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.ASGITransport(app=harness.app)),
    )
    with pytest.raises(openai.AuthenticationError) as auth:
        await wrong_key.images.generate(prompt="x")
    assert auth.value.code == "invalid_api_key"


async def test_every_response_has_a_request_id(harness: Harness) -> None:
    for response in [
        await harness.client.get("/health"),
        await harness.client.get("/v1/models"),
        await harness.client.post("/v1/images/generations", json={}),
    ]:
        assert response.headers["x-request-id"].startswith("req_")
    mine = await harness.client.get("/health", headers={"x-request-id": "trace-1234-abcd"})
    assert mine.headers["x-request-id"] == "trace-1234-abcd"


def _bad_requests() -> list[tuple[str, Any, str | None]]:
    return [
        ("prompt not a string", {"prompt": 123}, "prompt"),
        ("unknown field", {"prompt": "x", "colour": "red"}, "colour"),
        ("bad response_format", {"prompt": "x", "response_format": "gif"}, "response_format"),
        ("compression out of range", {"prompt": "x", "output_compression": 101}, "output_compression"),
        ("too many partials", {"prompt": "x", "partial_images": 4}, "partial_images"),
        ("bad size", {"prompt": "x", "size": "big"}, "size"),
        ("unsupported by the backend", {"prompt": "unsupported: this"}, "prompt"),
    ]


@pytest.mark.parametrize(("case", "body", "param"), _bad_requests(), ids=[c[0] for c in _bad_requests()])
async def test_bad_generation_requests_are_400(harness: Harness, case: str, body: Any, param: str | None) -> None:
    response = await harness.client.post("/v1/images/generations", json=body, headers=await harness.auth())
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]
    assert harness.fake.requests == []


async def test_bad_edit_requests_are_400(harness: Harness) -> None:
    auth = await harness.auth()
    no_image = await harness.client.post(
        "/v1/images/edits", data={"prompt": "x"}, files={"mask": ("m.png", tiny_png())}, headers=auth
    )
    assert no_image.status_code == 400
    assert no_image.json()["error"]["param"] == "image"
    not_image = await harness.client.post(
        "/v1/images/edits", data={"prompt": "x"}, files={"image": ("a.png", b"not an image")}, headers=auth
    )
    assert not_image.status_code == 400
    assert not_image.json()["error"]["code"] == "invalid_image"
    bad_n = await harness.client.post(
        "/v1/images/edits", data={"prompt": "x", "n": "lots"}, files={"image": ("a.png", tiny_png())}, headers=auth
    )
    assert bad_n.status_code == 400
    assert bad_n.json()["error"]["param"] == "n"
    remote = await harness.client.post(
        "/v1/images/edits", headers=auth, json={"prompt": "x", "images": [{"image_url": "http://127.0.0.1/x.png"}]}
    )
    assert remote.status_code == 400
    assert "data: URL" in remote.json()["error"]["message"]
    too_big = await harness.client.post(
        "/v1/images/edits",
        headers=auth,
        data={"prompt": "x"},
        files={"image": ("a.png", b"x" * (harness.app.state.services.settings.max_reference_bytes + 1))},
    )
    assert too_big.status_code == 413
    assert too_big.json()["error"]["type"] == "invalid_request_error"


async def test_body_over_the_limit_is_413_in_openai_shape(harness: Harness) -> None:
    limit = harness.app.state.services.settings.max_body_bytes
    response = await harness.client.post(
        "/v1/images/generations",
        content=b"x" * (limit + 1),
        headers={**await harness.auth(), "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_idempotency_and_limits_apply_here_too(harness: Harness) -> None:
    auth = {**await harness.auth(daily_image_quota=1), "Idempotency-Key": "oa-1"}
    first = await harness.client.post("/v1/images/generations", json={"prompt": "x"}, headers=auth)
    again = await harness.client.post("/v1/images/generations", json={"prompt": "x"}, headers=auth)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["job_id"] == first.json()["job_id"]
    over = await harness.client.post(
        "/v1/images/generations", json={"prompt": "y"}, headers={**auth, "Idempotency-Key": "oa-2"}
    )
    assert over.status_code == 429
    assert over.json()["error"]["type"] == "insufficient_quota"
    assert "retry-after" in over.headers


async def test_a_malformed_or_oversized_form_is_a_4xx(harness: Harness) -> None:
    auth = await harness.auth()
    broken = await harness.client.post(
        "/v1/images/edits", content=b"--x\r\nnot a part", headers={**auth, "content-type": "multipart/form-data"}
    )
    assert broken.status_code == 400
    assert broken.json()["error"]["type"] == "invalid_request_error"
    many = {
        f"image[{i}]": ("a.png", tiny_png())
        for i in range(harness.app.state.services.settings.max_reference_images + 2)
    }
    too_many = await harness.client.post("/v1/images/edits", data={"prompt": "x"}, files=many, headers=auth)
    assert too_many.status_code == 400
    assert "files" in too_many.json()["error"]["message"]


async def test_idempotency_of_uploads_includes_the_files(harness: Harness) -> None:
    auth = {**await harness.auth(), "Idempotency-Key": "edit-1"}
    first = await harness.client.post(
        "/v1/images/edits", data={"prompt": "x"}, files={"image": ("a.png", tiny_png())}, headers=auth
    )
    assert first.status_code == 200
    same = await harness.client.post(
        "/v1/images/edits", data={"prompt": "x"}, files={"image": ("a.png", tiny_png())}, headers=auth
    )
    assert same.headers["idempotent-replayed"] == "true"
    other = await harness.client.post(
        "/v1/images/edits", data={"prompt": "x"}, files={"image": ("a.png", tiny_png((0, 0, 0)))}, headers=auth
    )
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
