"""What every request gets, in one pass: a request id, the shared response headers, an access log line, metrics.

One pure-ASGI middleware instead of one per concern: the request headers are scanned once, and the response's
start message is rewritten once (the rate-limit headers the auth dependency left, then x-request-id).
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagegate.api.headers import SAFE_REQUEST_ID
from imagegate.keys.auth import RATE_STATE
from imagegate.logs import request_id_var
from imagegate.metrics import Metrics
from imagegate.webhooks.targets import HeaderWebhook, header_webhook_var

logger = logging.getLogger("imagegate.http")
REQUEST_ID = b"x-request-id"
WEBHOOK_URL = b"imagegate-webhook-url"
WEBHOOK_EVENTS = b"imagegate-webhook-events"


def new_request_id(incoming: bytes | None) -> str:
    """The caller's own x-request-id when it is sane, else a new 'req_…'."""
    text = incoming.decode("latin-1") if incoming else ""
    return text if SAFE_REQUEST_ID.match(text) else "req_" + secrets.token_hex(12)


class RequestMiddleware:
    """Every response carries x-request-id (logs name it) and the caller's x-ratelimit-* state; the request is
    logged (method, route, status, duration — never bodies) and counted; Imagegate-Webhook-Url (and -Events)
    are made available to job submission on every surface.

    base(scope) is where a webhook payload's links (/generated/…, /v1/images/jobs/…) point for this listener.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, base: Callable[[Scope], str]) -> None:
        self.app = app
        self.metrics = metrics
        self.base = base

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = url = events = None
        for name, value in scope["headers"]:  # the last of a repeated header wins, as in a dict of them
            if name == REQUEST_ID:
                incoming = value
            elif name == WEBHOOK_URL:
                url = value
            elif name == WEBHOOK_EVENTS:
                events = value
        request_id = new_request_id(incoming)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        id_header = (REQUEST_ID, request_id.encode())
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = _with_rate_headers(message.get("headers", []), state.get(RATE_STATE))
                message["headers"].append(id_header)
            await send(message)

        webhook = HeaderWebhook(
            url.decode("latin-1") if url is not None else None,
            events.decode("latin-1") if events is not None else None,
            functools.partial(self.base, scope),
        )
        id_token, webhook_token = request_id_var.set(request_id), header_webhook_var.set(webhook)
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            self._observe(scope, status, time.perf_counter() - started)
            header_webhook_var.reset(webhook_token)
            request_id_var.reset(id_token)

    def _observe(self, scope: Scope, status: int, elapsed: float) -> None:
        observe(self.metrics, scope, status, elapsed)


def observe(metrics: Metrics, scope: Scope, status: int, elapsed: float) -> None:
    """Count an answered request and write its access line (the request id comes from the log context)."""
    route = _route(scope)
    metrics.http.labels(route, scope["method"], str(status)).inc()
    metrics.http_duration.labels(route).observe(elapsed)
    if logger.isEnabledFor(logging.INFO):  # the fields are built only for a line that is written
        logger.info(
            "%s %s %s",
            scope["method"],
            scope["path"],
            status,
            extra={
                "status": status,
                "route": route,
                "ms": round(elapsed * 1000, 1),
                "key": scope.get("state", {}).get("key_handle"),
            },
        )


def _with_rate_headers(headers: list[tuple[bytes, bytes]], extra: dict[str, str] | None) -> list[tuple[bytes, bytes]]:
    """A copy of the response's headers plus the key's rate-limit headers it does not already have."""
    if not extra:
        return list(headers)
    present = {name.lower() for name, _ in headers}
    return [*headers, *((k.encode(), v.encode()) for k, v in extra.items() if k.lower().encode() not in present)]


def _route(scope: Scope) -> str:
    """The route's template (/v1/images/jobs/{job_id}), never the raw path: bounded label values."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class NamedRoute:
    """A route's name for the log and metrics where no router matched one (the protocol's own /health)."""

    def __init__(self, path: str) -> None:
        self.path = path
