"""Per-request observability: the request id in the log context, an access log line, and HTTP metrics."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagegate.logs import request_id_var
from imagegate.metrics import Metrics

logger = logging.getLogger("imagegate.http")


class ObserveMiddleware:
    """Logs one line per request (method, route, status, duration — never bodies) and counts it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        token = request_id_var.set(scope.get("state", {}).get("request_id"))

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            elapsed = time.perf_counter() - started
            route = _route(scope)
            self.metrics.http.labels(route, scope["method"], str(status)).inc()
            self.metrics.http_duration.labels(route).observe(elapsed)
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
            request_id_var.reset(token)


def _route(scope: Scope) -> str:
    """The route's template (/v1/images/jobs/{job_id}), never the raw path: bounded label values."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
