"""Refuse what no handler can use before it reaches one: a NUL in the URL, a body over the size limit (while
reading it, never after buffering it), a body that stops arriving."""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagegate.api.errors import HttpError, SurfaceErrors
from imagegate.api.guard import url_has_nul

CONTENT_LENGTH = b"content-length"
TRANSFER_ENCODING = b"transfer-encoding"


class InputGuardMiddleware:
    """413 at once for a declared Content-Length over the limit, 400 for a NUL in the URL (both in the shape of
    the surface called); then, for a request with a body, 413 once its bytes pass the limit and 408 when no part
    of it arrives for `seconds` while more is due (None: no such bound).

    A request without a body (no Content-Length, or 0, and no Transfer-Encoding) is passed on as it is.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, surfaces: SurfaceErrors, seconds: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.surfaces = surfaces
        self.seconds = seconds

    def _too_large(self) -> str:
        return f"The request body is larger than {self.max_bytes} bytes; send less."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = chunked = None
        for name, value in scope["headers"]:  # the last of a repeated header wins, as in a dict of them
            if name == CONTENT_LENGTH:
                declared = value
            elif name == TRANSFER_ENCODING:
                chunked = value
        error = None
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            error = HttpError(413, self._too_large(), {"Connection": "close"})
        elif url_has_nul(scope):
            error = HttpError(400, "The URL contains a NUL character (%00); remove it.")
        if error is not None:
            await self.surfaces.render(Request(scope), error)(scope, receive, send)
            return
        if chunked is None and declared in (None, b"0"):
            await self.app(scope, receive, send)
            return
        await self.app(scope, self._guarded(receive), send)

    def _guarded(self, receive: Receive) -> Receive:
        """receive(), counting the body's bytes against the limit and bounding the wait for each part."""
        received = 0
        complete = False

        async def guarded_receive() -> Message:
            nonlocal received, complete
            if complete:  # after the body, receive() only waits for a disconnect: that may take any time
                return await receive()
            message = await self._next_part(receive)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._too_large())
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return guarded_receive

    async def _next_part(self, receive: Receive) -> Message:
        if self.seconds is None:
            return await receive()
        try:
            async with asyncio.timeout(self.seconds):
                return await receive()
        except TimeoutError:
            raise HTTPException(
                408,
                f"The request body stopped arriving (nothing for {self.seconds:g} seconds); send it again.",
                headers={"Connection": "close"},
            ) from None
