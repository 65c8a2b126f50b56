"""Hostile input on every surface is a 4xx with a message, never a 500 (SQLite and PostgreSQL alike)."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import Harness

LONE_SURROGATE_JSON = '{"prompt": "a fox \\ud800 at dawn"}'
SURROGATE_FIELDS = [
    '{"prompt": "a fox \\ud800 at dawn"}',
    '{"prompt": "a fox", "model": "m\\udfff"}',
    '{"prompt": "a fox", "size": "\\ud800"}',
    '{"prompt": "a fox", "user": "\\ud800"}',
]


@pytest.mark.parametrize("body", SURROGATE_FIELDS)
@pytest.mark.parametrize("path", ["/v1/images/generate", "/v1/images/generations"])
async def test_a_lone_surrogate_is_a_400(
    harness: Harness, body: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    if path == "/v1/images/generate" and '"user"' in body:
        body = body.replace('"user"', '"quality"')
    auth = {**await harness.auth(), "Content-Type": "application/json"}
    with caplog.at_level(logging.DEBUG):
        response = await harness.client.post(path, content=body.encode(), headers=auth)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] in ("prompt", "model", "size", "quality", "user")
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
