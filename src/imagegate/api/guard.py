"""Refuse text no handler can use before it reaches one: a NUL in the URL path or query string."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.types import Scope


def url_has_nul(scope: Scope) -> bool:
    """True when the decoded path or query string holds a NUL (PostgreSQL text cannot hold one)."""
    path: str = scope.get("path", "")
    query: bytes = scope.get("query_string", b"")
    # Only a query with an escape can decode to more than it shows: most have none, and are not decoded.
    return "\x00" in path or b"\x00" in query or (b"%" in query and b"\x00" in unquote_to_bytes(query))
