"""GET /generated/{name}: exact names only, no partial matches, no traversal."""

from __future__ import annotations

import warnings

import pytest

from tests.helpers import Harness


@pytest.fixture
async def image_name(harness: Harness) -> str:
    """The name of one generated image."""
    response = await harness.client.post("/v1/images/generate", json={"prompt": "x"}, headers=await harness.auth())
    name: str = response.json()["images"][0]["name"]
    return name


async def test_only_exact_names_are_served(harness: Harness, image_name: str) -> None:
    stem = image_name.rsplit(".", 1)[0]
    assert (await harness.client.get(f"/generated/{image_name}")).status_code == 200
    for wrong in [
        stem,
        stem[:-1] + ".png",
        f"{stem}.jpeg",
        image_name + "x",
        image_name.upper(),
        "..%2Fimagegate.db",
        "..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
        "x" * 24 + ".png",
    ]:
        response = await harness.client.get(f"/generated/{wrong}")
        assert response.status_code == 404, wrong
        assert response.json()["error"]["code"] == "not_found"


async def test_content_types_follow_the_format(harness: Harness) -> None:
    auth = await harness.auth()
    for fmt, content_type in [("jpeg", "image/jpeg"), ("webp", "image/webp"), ("png", "image/png")]:
        job = await harness.client.post(
            "/v1/images/generate",
            json={"prompt": "x", "model": "demo", "size": "64x64", "output_format": fmt},
            headers=auth,
        )
        image = job.json()["images"][0]
        assert image["format"] == fmt
        response = await harness.client.get(image["url"])
        assert response.headers["content-type"] == content_type


async def test_head_answers_the_headers_without_the_body(harness: Harness, image_name: str) -> None:
    full = await harness.client.get(f"/generated/{image_name}")
    head = await harness.client.head(f"/generated/{image_name}")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(full.content))
    assert head.headers["content-type"] == "image/png"
    assert head.headers["etag"] == full.headers["etag"]
    assert (await harness.client.head("/generated/" + "x" * 24 + ".png")).status_code == 404


async def test_the_api_schema_builds_without_warnings(harness: Harness) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        schema = (await harness.client.get("/openapi.json")).json()
    assert "get" in schema["paths"]["/generated/{name}"]
