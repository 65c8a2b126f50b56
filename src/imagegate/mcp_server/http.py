"""The MCP server behind /mcp: the tools over streamable HTTP, calling this app in-process with the caller's key."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx2
from fastapi import FastAPI
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import Receive, Scope, Send

from imagegate.mcp_server.endpoint import BASE_HEADER
from imagegate.mcp_server.tools import build_server
from imagegate.settings import Settings


def create(app: FastAPI, settings: Settings) -> MCPServer:
    """The MCP server whose tools call this app in-process with the caller's own key."""

    @contextlib.asynccontextmanager
    async def client_for(ctx: Context[Any, Any]) -> AsyncIterator[httpx2.AsyncClient]:
        headers = ctx.headers or {}
        base = headers.get(BASE_HEADER.decode()) or settings.public_base_url or "http://imagegate"
        async with httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app),
            base_url=base,
            headers={"Authorization": headers.get("authorization", "")},
            timeout=None,
        ) as client:
            yield client

    server = build_server(
        client_for,
        inline_max_bytes=lambda: settings.mcp_inline_max_bytes,
        wait_seconds=lambda: settings.mcp_wait_seconds,
    )
    # Stateless: any process behind the listener can answer any request. The key guards the endpoint, so the
    # SDK's localhost-only Host check (meant for unauthenticated local servers) would only refuse proxies.
    server.streamable_http_app(
        stateless_http=True, transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False)
    )
    return server


class McpRunner:
    """The SDK's session manager, run for the app's life in a task of its own (its task group must be left in
    the task that entered it, and the request that starts it ends long before)."""

    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self.server = create(app, settings)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Enter the session manager; returns once it takes requests."""
        started = asyncio.Event()

        async def hold() -> None:
            async with self.server.session_manager.run():
                started.set()
                await self._stop.wait()

        self._task = asyncio.create_task(hold(), name="mcp")
        waiting = asyncio.create_task(started.wait())
        await asyncio.wait({self._task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if self._task.done():
            self._task.result()

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One /mcp request."""
        await self.server.session_manager.handle_request(scope, receive, send)

    async def stop(self) -> None:
        """Leave the session manager."""
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
