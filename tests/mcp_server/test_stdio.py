"""`imagegate mcp` over stdio, driven by the mcp SDK's stdio client, calling a real server over HTTP."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import ImageContent, TextContent

from tests.fakes.server import base_env, imagegate, serve

pytestmark = pytest.mark.acceptance


def _key(env: dict[str, str], cwd: Path, *options: str) -> str:
    created = imagegate("keys", "create", "agent", *options, env=env, cwd=cwd)
    assert created.returncode == 0, created.stderr
    return created.stdout.strip().splitlines()[-1]


def _text(content: object) -> str:
    assert isinstance(content, TextContent), content
    return content.text


async def test_the_stdio_tools_generate_edit_wait_and_report_errors(tmp_path: Path) -> None:
    env = base_env(IMAGEGATE_DATA_DIR=str(tmp_path / "data"), IMAGEGATE_ADMIN_PASSWORD="x" * 16)
    assert imagegate("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    key = _key(env, tmp_path, "--models", "demo")
    with serve(env, tmp_path) as server:
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "imagegate.cli", "mcp", "--wait", "0"],
            env={**base_env(), "IMAGEGATE_URL": server.url, "IMAGEGATE_API_KEY": key},
            cwd=str(tmp_path),
        )
        async with stdio_client(params) as (read, write, *_), ClientSession(read, write) as session:
            await session.initialize()
            names = {tool.name for tool in (await session.list_tools()).tools}
            assert names == {"generate_image", "edit_image", "describe_image", "get_job", "list_models"}
            models = await session.call_tool("list_models", {})
            assert _text(models.content[0]).startswith("demo: sizes auto or any WIDTHxHEIGHT")
            # --wait 0: the job's id comes back at once, and get_job (which waits the same) finds it later.
            queued = await session.call_tool("generate_image", {"prompt": "a lighthouse", "size": "64x64"})
            assert not queued.is_error, queued.content
            assert "call get_job" in _text(queued.content[0])
            job_id = _text(queued.content[0]).split()[1]
            done = await session.call_tool("get_job", {"job_id": job_id, "wait": 60})
            assert isinstance(done.content[0], ImageContent)
            url = next(line for line in _text(done.content[-1]).splitlines() if "/generated/" in line)
            edited = await session.call_tool("edit_image", {"prompt": "at night", "images": [url]})
            assert not edited.is_error, edited.content
            refused = await session.call_tool("generate_image", {"prompt": "x", "model": "nope"})
            assert refused.is_error
            assert "nope" in _text(refused.content[0])
        wrong = StdioServerParameters(
            command=sys.executable,
            args=["-m", "imagegate.cli", "mcp", "--url", server.url, "--key", "ig_wrong"],
            env=base_env(),
            cwd=str(tmp_path),
        )
        async with stdio_client(wrong) as (read, write, *_), ClientSession(read, write) as session:
            await session.initialize()
            denied = await session.call_tool("list_models", {})
            assert denied.is_error
            assert "API key" in _text(denied.content[0])
    no_key = imagegate("mcp", "--url", "http://127.0.0.1:9", env=base_env(), cwd=tmp_path)
    assert no_key.returncode != 0
    assert "IMAGEGATE_API_KEY" in no_key.stderr
