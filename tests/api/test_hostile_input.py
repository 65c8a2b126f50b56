"""Hostile input on every surface is a 4xx with a message, never a 500 (SQLite and PostgreSQL alike)."""

from __future__ import annotations

import base64
import io
import logging
import struct
import zlib

import pytest
from PIL import Image

from tests.fakes.backends import tiny_png
from tests.helpers import Harness

LONE_SURROGATE_JSON = '{"prompt": "a fox \\ud800 at dawn"}'
SURROGATE_FIELDS = [  # (body, the field it is in)
    ('{"prompt": "a fox \\ud800 at dawn"}', "prompt"),
    ('{"prompt": "a fox", "model": "m\\udfff"}', "model"),
    ('{"prompt": "a fox", "size": "\\ud800"}', "size"),
    ('{"prompt": "a fox", "user": "\\ud800"}', "user"),
]


@pytest.mark.parametrize(("body", "param"), SURROGATE_FIELDS)
@pytest.mark.parametrize("path", ["/v1/images/generate", "/v1/images/generations"])
async def test_a_lone_surrogate_is_a_400(
    harness: Harness, body: str, param: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    if path == "/v1/images/generate" and param == "user":  # the native API has no user field
        body, param = body.replace('"user"', '"quality"'), "quality"
    auth = {**await harness.auth(), "Content-Type": "application/json"}
    with caplog.at_level(logging.DEBUG):
        response = await harness.client.post(path, content=body.encode(), headers=auth)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert "at dawn" not in caplog.text


async def test_a_lone_surrogate_in_an_edit_form_prompt_is_a_400(harness: Harness) -> None:
    auth = {**await harness.auth(), "Content-Type": "application/json"}
    body = '{"prompt": "\\ud800", "images": [{"image_url": "data:image/png;base64,AAAA"}]}'
    response = await harness.client.post("/v1/images/edits", content=body.encode(), headers=auth)
    assert response.status_code == 400, response.text


@pytest.mark.parametrize("path", ["/v1/images/edits", "/v1/images/generations", "/v1/images/generate"])
async def test_a_deeply_nested_json_body_is_a_400(harness: Harness, path: str) -> None:
    auth = {**await harness.auth(), "Content-Type": "application/json"}
    body = "[" * 10_000 + "]" * 10_000
    response = await harness.client.post(path, content=body.encode(), headers=auth)
    assert response.status_code == 400, response.text
    deep_object = '{"prompt": "x", "background": ' + '{"a": ' * 10_000 + "1" + "}" * 10_000 + "}"
    response = await harness.client.post(path, content=deep_object.encode(), headers=auth)
    assert response.status_code == 400, response.text


@pytest.mark.parametrize(
    "path",
    [
        "/v1/images/jobs/img_%00abc",
        "/v1/images/jobs?cursor=img_%00",
        "/v1/images/jobs/img_%00/cancel",
        "/v1/models/fake%00model",
        "/generated/img_%00/0.png",
    ],
)
async def test_a_nul_in_a_path_or_query_is_a_400(harness: Harness, path: str) -> None:
    auth = await harness.auth()
    method = "POST" if path.endswith("/cancel") else "GET"
    response = await harness.client.request(method, path, headers=auth)
    assert response.status_code == 400, response.text
    assert "NUL" in response.json()["error"]["message"]


async def test_a_nul_in_a_delete_is_a_400(harness: Harness) -> None:
    response = await harness.client.delete("/v1/images/jobs/img_%00", headers=await harness.auth())
    assert response.status_code == 400, response.text


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose pixel data is garbage: decoding it would fail."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"not pixels") + chunk(b"IEND", b"")


def b64(data: bytes) -> str:
    """Plain base64 text."""
    return base64.b64encode(data).decode()


async def test_an_input_over_the_pixel_limit_is_refused_from_its_header(harness: Harness) -> None:
    body = {"prompt": "x", "reference_images_base64": [b64(png_claiming(8192, 8192))]}
    response = await harness.client.post("/v1/images/generate", json=body, headers=await harness.auth())
    assert response.status_code == 413, response.text
    assert "8192x8192 pixels" in response.json()["error"]["message"]
    assert harness.fake.requests == []


async def test_inputs_over_the_request_pixel_budget_are_refused_before_any_is_decoded(harness: Harness) -> None:
    body = {"prompt": "x", "reference_images_base64": [b64(png_claiming(3000, 3000))] * 4}
    response = await harness.client.post("/v1/images/generate", json=body, headers=await harness.auth())
    assert response.status_code == 413, response.text
    assert "per request" in response.json()["error"]["message"]


async def test_four_real_8192_pixel_references_in_a_small_request_are_refused(harness: Harness) -> None:
    buffer = io.BytesIO()
    Image.new("L", (8192, 8192)).save(buffer, format="PNG")
    big = buffer.getvalue()
    assert len(big) < 200_000  # small on the wire, 268 MB once decoded
    files = [("image[]", (f"ref{i}.png", big, "image/png")) for i in range(4)]
    response = await harness.client.post(
        "/v1/images/edits", data={"prompt": "x"}, files=files, headers=await harness.auth()
    )
    assert response.status_code == 413, response.text
    assert "pixels" in response.json()["error"]["message"]


async def test_inputs_within_the_budgets_are_decoded_and_checked(harness: Harness) -> None:
    body = {"prompt": "x", "reference_images_base64": [b64(png_claiming(64, 64))]}
    response = await harness.client.post("/v1/images/generate", json=body, headers=await harness.auth())
    assert response.status_code == 400, response.text
    assert "not a readable image" in response.json()["error"]["message"]
    good = {"prompt": "x", "reference_images_base64": [b64(tiny_png())]}
    assert (await harness.client.post("/v1/images/generate", json=good, headers=await harness.auth())).is_success
