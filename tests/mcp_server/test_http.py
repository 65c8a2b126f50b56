"""/mcp with the mcp SDK's own client: tools listed, images generated and edited, errors as tool errors."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types import ImageContent, TextContent
from PIL import Image

from imagegate.keys import service as keys
from tests.fakes.backends import tiny_png
from tests.helpers import Harness, counting, disable_key_elsewhere


@asynccontextmanager
async def mcp_session(harness: Harness, headers: dict[str, str]) -> AsyncIterator[ClientSession]:
    """An initialised SDK client session on the app's /mcp."""
    http = httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=harness.app), base_url="http://testserver", headers=headers
    )
    async with (
        http,
        streamable_http_client("http://testserver/mcp", http_client=http) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def text_of(content: object) -> str:
    """The text of a text content item (and a failure for anything else)."""
    assert isinstance(content, TextContent), content
    return content.text


async def test_tools_are_listed_with_descriptions_and_schemas(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imagegate.http")
    async with mcp_session(harness, await harness.auth()) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    logged = [record for record in caplog.records if record.name == "imagegate.http" and "/mcp" in record.getMessage()]
    assert logged
    assert all(getattr(r, "route", None) == "/mcp" and str(getattr(r, "key", "")).startswith("key_") for r in logged)
    assert set(tools) == {"generate_image", "edit_image", "describe_image", "get_job", "list_models"}
    for tool in tools.values():
        assert tool.description
        for name, schema in tool.input_schema.get("properties", {}).items():
            assert schema.get("description"), (tool.name, name)
    images = tools["edit_image"].input_schema["properties"]["images"]
    assert (images["minItems"], images["maxItems"]) == (1, 16)
    assert tools["generate_image"].input_schema["required"] == ["prompt"]


async def test_generate_returns_the_image_and_its_url_then_edit_it_with_a_mask(harness: Harness) -> None:
    async with mcp_session(harness, await harness.auth()) as session:
        result = await session.call_tool("generate_image", {"prompt": "a fox", "size": "32x16"})
        assert not result.is_error, result.content
        image, text = result.content
        assert isinstance(image, ImageContent)
        assert image.mime_type == "image/png"
        assert base64.b64decode(image.data) == tiny_png(size=(32, 16))
        url = next(line for line in text_of(text).splitlines() if "/generated/" in line)
        assert url.startswith("http://testserver/generated/")
        mask = base64.b64encode(tiny_png(size=(32, 16))).decode()
        edited = await session.call_tool("edit_image", {"prompt": "now blue", "images": [url], "mask": mask})
        assert not edited.is_error, edited.content
    sent = harness.fake.requests[-1]
    assert sent.references[0].data == tiny_png(size=(32, 16))
    assert sent.mask is not None


async def test_an_edit_refuses_urls_this_service_did_not_issue(harness: Harness) -> None:
    async with mcp_session(harness, await harness.auth()) as session:
        result = await session.call_tool("edit_image", {"prompt": "x", "images": ["https://example.com/cat.png"]})
        gone = await session.call_tool("edit_image", {"prompt": "x", "images": ["http://testserver/generated/no.png"]})
    assert result.is_error
    assert "not an image URL this service returned" in text_of(result.content[0])
    assert gone.is_error
    assert "may have expired" in text_of(gone.content[0])


async def test_describe_image_answers_with_the_vision_text(harness: Harness) -> None:
    async with mcp_session(harness, await harness.auth()) as session:
        image = base64.b64encode(tiny_png(size=(20, 10))).decode()
        result = await session.call_tool("describe_image", {"prompt": "what is it?", "images": [image]})
        direct = await harness.client.post(
            "/v1/vision", json={"prompt": "what is it?", "images_base64": [image]}, headers=await harness.auth()
        )
    assert not result.is_error, result.content
    assert text_of(result.content[0]) == direct.json()["text"]


async def test_list_models_gives_the_keys_models_with_their_sizes(harness: Harness) -> None:
    async with mcp_session(harness, await harness.auth(allowed_models=["demo"])) as session:
        result = await session.call_tool("list_models", {})
    assert not result.is_error
    (line,) = text_of(result.content[0]).splitlines()
    assert line.startswith("demo: sizes auto or any WIDTHxHEIGHT from 16 to 4096")


async def test_a_model_the_key_lacks_is_a_tool_error_with_the_api_message(harness: Harness) -> None:
    auth = await harness.auth(allowed_models=["demo"])
    async with mcp_session(harness, auth) as session:
        result = await session.call_tool("generate_image", {"prompt": "x", "model": "fake-model"})
    direct = await harness.client.post("/v1/images/generate", json={"prompt": "x", "model": "fake-model"}, headers=auth)
    assert result.is_error
    assert text_of(result.content[0]) == direct.json()["error"]["message"]


async def test_a_failed_job_is_a_tool_error_with_its_message(harness: Harness) -> None:
    async with mcp_session(harness, await harness.auth()) as session:
        result = await session.call_tool("generate_image", {"prompt": "fail: the upstream said no"})
    assert result.is_error
    assert "(job img_" in text_of(result.content[0])


async def test_no_key_is_a_401(harness: Harness) -> None:
    response = await harness.client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"
    wrong = await harness.client.post("/mcp", json={}, headers={"Authorization": "Bearer ig_nope"})
    assert wrong.status_code == 401


async def test_a_key_verified_moments_ago_is_not_read_again(harness: Harness) -> None:
    _key, token = await harness.new_key()
    auth = {"Authorization": f"Bearer {token}"}
    assert (await harness.client.post("/mcp", json={}, headers=auth)).status_code != 401  # now cached
    with counting(harness.app.state.services.engine) as counts:
        assert (await harness.client.post("/mcp", json={}, headers=auth)).status_code != 401
    assert [sql for sql in counts.statements if "api_key" in sql] == []


async def test_a_key_disabled_elsewhere_is_refused_within_the_cache_lifetime(harness: Harness) -> None:
    key, token = await harness.new_key()
    auth = {"Authorization": f"Bearer {token}"}
    assert (await harness.client.post("/mcp", json={}, headers=auth)).status_code != 401
    await disable_key_elsewhere(harness, key)
    async with asyncio.timeout(30):  # a deadline for a loaded machine; the cache lives half a second
        while (response := await harness.client.post("/mcp", json={}, headers=auth)).status_code != 403:
            await asyncio.sleep(0.05)
    assert response.json()["error"]["code"] == "key_disabled"


async def test_a_key_disabled_here_is_refused_at_once(harness: Harness) -> None:
    key, token = await harness.new_key()
    auth = {"Authorization": f"Bearer {token}"}
    assert (await harness.client.post("/mcp", json={}, headers=auth)).status_code != 401
    async with harness.app.state.services.sessions() as session, session.begin():
        await keys.set_enabled(session=session, handle=key.handle, enabled=False)
    assert (await harness.client.post("/mcp", json={}, headers=auth)).status_code == 403


async def test_a_wait_that_runs_out_returns_the_job_id_and_get_job_finds_it_later(harness: Harness) -> None:
    harness.app.state.services.settings.mcp_wait_seconds = 0.5
    async with mcp_session(harness, await harness.auth()) as session:
        reported: list[str | None] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            reported.append(message)

        result = await session.call_tool("generate_image", {"prompt": "gate:slow"}, progress_callback=on_progress)
        assert not result.is_error, result.content
        text = text_of(result.content[0])
        assert "call get_job" in text
        job_id = text.split()[1]
        assert job_id.startswith("img_")
        assert reported
        assert all(message and job_id in message for message in reported)
        await harness.fake.wait_started(1)
        running = await session.call_tool("get_job", {"job_id": job_id, "wait": 0})
        assert text_of(running.content[0]) == f"Job {job_id} is running."
        harness.fake.open("gate:slow")
        later = await session.call_tool("get_job", {"job_id": job_id, "wait": 60})
    assert isinstance(later.content[0], ImageContent)


async def test_an_image_over_the_inline_limit_comes_as_a_preview_and_its_link(harness: Harness) -> None:
    harness.app.state.services.settings.mcp_inline_max_bytes = 1024
    async with mcp_session(harness, await harness.auth()) as session:
        result = await session.call_tool("generate_image", {"prompt": "big", "size": "1024x1024", "model": "demo"})
    assert not result.is_error, result.content
    image, text = result.content
    assert isinstance(image, ImageContent)
    assert image.mime_type == "image/jpeg"
    with Image.open(io.BytesIO(base64.b64decode(image.data))) as preview:
        assert max(preview.size) <= 512
    url = next(line for line in text_of(text).splitlines() if "/generated/" in line)
    assert len((await harness.client.get(url)).content) > 1024


def test_the_app_starts_without_importing_the_sdk() -> None:
    probe = (
        "import sys, imagegate.app, imagegate.cli; print(sorted(m for m in sys.modules if m.split('.')[0] == 'mcp'))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
