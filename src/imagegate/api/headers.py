"""Response headers every surface shares: the rate-limit state of the calling key."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagegate.keys.auth import RATE_STATE


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
