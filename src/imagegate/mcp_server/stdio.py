"""`imagegate mcp`: the same tools over stdio, for MCP clients that only launch commands; they call a running
ImageGate over HTTP with one key."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx2
from mcp.server.mcpserver import Context

from imagegate.mcp_server.tools import STEP_SECONDS, build_server

# Each call may be a long poll of STEP_SECONDS; the rest covers a slow network.
TIMEOUT_SECONDS = STEP_SECONDS + 60.0


async def serve_stdio(*, url: str, key: str, inline_max_bytes: int, wait_seconds: float) -> None:
    """Speak MCP on stdin/stdout until the client closes it."""
    base = url.rstrip("/")

    @contextlib.asynccontextmanager
    async def client_for(_ctx: Context[Any, Any]) -> AsyncIterator[httpx2.AsyncClient]:
        async with httpx2.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT_SECONDS
        ) as client:
            yield client

    server = build_server(client_for, inline_max_bytes=lambda: inline_max_bytes, wait_seconds=lambda: wait_seconds)
    await server.run_stdio_async()
