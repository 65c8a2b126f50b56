"""Response headers every surface shares: a request id, the calling key's rate-limit state, a polling hint."""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagegate.keys.auth import RATE_STATE
from imagegate.settings import Settings
from imagegate.webhooks.targets import HeaderWebhook, header_webhook_var

# Retry-After on a 202: when to look again. codex-image-service's README has its callers poll every 5 s.
POLL_RETRY_AFTER = "5"


class RateLimitHeadersMiddleware:
    """Adds the x-ratelimit-* headers the auth dependency left in request.state, on success and error alike."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra: dict[str, str] = scope.get("state", {}).get(RATE_STATE) or {}
                if extra:
                    present = {name.lower() for name, _ in message.get("headers", [])}
                    headers = list(message.get("headers", []))
                    headers += [(k.encode(), v.encode()) for k, v in extra.items() if k.lower().encode() not in present]
                    message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


class RequestIdMiddleware:
    """Every response carries x-request-id: the caller's own (when sane) or a new 'req_…'; logs can name it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if SAFE_REQUEST_ID.match(incoming) else "req_" + secrets.token_hex(12)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


class WebhookHeaderMiddleware:
    """Makes Imagegate-Webhook-Url (and -Events) work on every surface: job submission reads them from here.

    base(scope) is where the payload's links (/generated/…, /v1/images/jobs/…) point for this listener.
    """

    def __init__(self, app: ASGIApp, base: Callable[[Scope], str]) -> None:
        self.app = app
        self.base = base

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        url, events = headers.get(b"imagegate-webhook-url"), headers.get(b"imagegate-webhook-events")
        token = header_webhook_var.set(
            HeaderWebhook(
                url.decode("latin-1") if url is not None else None,
                events.decode("latin-1") if events is not None else None,
                functools.partial(self.base, scope),
            )
        )
        try:
            await self.app(scope, receive, send)
        finally:
            header_webhook_var.reset(token)


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
