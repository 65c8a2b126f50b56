"""Refuse text no handler can use before it reaches one: a NUL in the URL path or query string."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from imagegate.api.errors import HttpError, SurfaceErrors


def url_has_nul(scope: Scope) -> bool:
    """True when the decoded path or query string holds a NUL (PostgreSQL text cannot hold one)."""
    path: str = scope.get("path", "")
    query: bytes = scope.get("query_string", b"")
    return "\x00" in path or b"\x00" in unquote_to_bytes(query)


class UrlGuardMiddleware:
    """400 for a URL with a NUL in its path or query, in the shape of the surface that was called."""

    def __init__(self, app: ASGIApp, surfaces: SurfaceErrors) -> None:
        self.app = app
        self.surfaces = surfaces

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and url_has_nul(scope):
            error = HttpError(400, "The URL contains a NUL character (%00); remove it.")
            await self.surfaces.render(Request(scope), error)(scope, receive, send)
            return
        await self.app(scope, receive, send)
