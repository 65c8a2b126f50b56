"""/mcp on the main listener, without the mcp SDK until the first request: a service whose callers never speak
MCP does not pay for importing it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from imagegate.api.errors import native_error
from imagegate.errors import ImagegateError
from imagegate.keys.auth import bearer_token, verified_key
from imagegate.settings import Settings

if TYPE_CHECKING:
    from imagegate.mcp_server.http import McpRunner

ENDPOINT = "/mcp"
BASE_HEADER = b"x-imagegate-base"


class McpEndpoint:
    """Refuses a request without a valid API key (401, as the HTTP API), then hands it to the MCP server."""

    path = ENDPOINT

    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._runner: McpRunner | None = None
        self._starting = asyncio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self  # the request log and metrics name the route /mcp, not 'unmatched'
        request = Request(scope)
        try:
            key = await verified_key(request, bearer_token(request))  # the HTTP API's cache: revoked within its bound
            request.state.key_handle = key.handle  # logged beside the request, as on the HTTP API
        except ImagegateError as error:
            await native_error(error)(scope, receive, send)
            return
        base = (self.settings.public_base_url or str(request.base_url)).rstrip("/")
        # The tools call this app back in-process and need the base the caller's links use; a caller's own
        # header of that name is dropped.
        headers = [(name, value) for name, value in scope["headers"] if name != BASE_HEADER]
        scope = {**scope, "headers": [*headers, (BASE_HEADER, base.encode())]}
        runner = await self._started()
        await runner.handle(scope, receive, send)

    async def _started(self) -> McpRunner:
        async with self._starting:
            if self._runner is None:
                from imagegate.mcp_server.http import McpRunner

                runner = McpRunner(self.app, self.settings)
                await runner.start()
                self._runner = runner
            return self._runner

    async def aclose(self) -> None:
        """Stop the MCP session manager, if a request started it."""
        if self._runner is not None:
            await self._runner.stop()
            self._runner = None
