"""What the shared response headers need: which request ids are kept, a polling hint, where webhook links point.

The headers themselves are added by api.observe.RequestMiddleware."""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import Scope

from imagegate.settings import Settings

# Retry-After on a 202: when to look again. codex-image-service's README has its callers poll every 5 s.
POLL_RETRY_AFTER = "5"
SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


def request_base(settings: Settings) -> Callable[[Scope], str]:
    """Links in webhooks point at the configured public URL, else at what the request came in on."""

    def base(scope: Scope) -> str:
        return settings.public_base_url or str(Request(scope).base_url).rstrip("/")

    return base


def main_listener_base(settings: Settings) -> Callable[[Scope], str]:
    """For the second listener: the public URL, else the request's host on the main listener's port (the
    payload's links are the native API's, which only the main listener serves)."""

    def base(scope: Scope) -> str:
        if settings.public_base_url:
            return settings.public_base_url
        url = Request(scope).url
        host = url.hostname or settings.host
        return f"{url.scheme}://{f'[{host}]' if ':' in host else host}:{settings.port}"

    return base
