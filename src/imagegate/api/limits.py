"""Refuse request bodies over the size limit while reading them, never after buffering them; and slow ones."""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagegate.api.errors import HttpError, SurfaceErrors


class BodyLimitMiddleware:
    """413 at once for a declared Content-Length over the limit; otherwise count bytes as they arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int, surfaces: SurfaceErrors) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.surfaces = surfaces

    def _message(self) -> str:
        return f"The request body is larger than {self.max_bytes} bytes; send less."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            error = HttpError(413, self._message(), {"Connection": "close"})
            response = self.surfaces.render(Request(scope), error)
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited_receive, send)


class BodyTimeoutMiddleware:
    """408 when a request body stops arriving: no part of it for `seconds` while more is due."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        complete = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:  # after the body, receive() only waits for a disconnect: that may take any time
                return await receive()
            try:
                async with asyncio.timeout(self.seconds):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(
                    408,
                    f"The request body stopped arriving (nothing for {self.seconds:g} seconds); send it again.",
                    headers={"Connection": "close"},
                ) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed_receive, send)
