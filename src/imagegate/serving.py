"""Running the app under uvicorn: shutdown that answers waiting requests first, and bounded connections."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from imagegate.app import begin_shutdown
from imagegate.settings import Settings

# After the jobs' grace period, interrupted jobs are settled and their waiters answer: this long is left for that.
ANSWER_MARGIN_SECONDS = 5


class DrainingServer(uvicorn.Server):
    """uvicorn, telling the app to answer its waiting requests before it waits for them to finish.

    `on_listening` runs once the app has started and its ports are bound, so what it says is true.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI, on_listening: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self.imagegate_app = app
        self.on_listening = on_listening

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup (lifespan, then binding), then the listening announcement."""
        await super().startup(sockets)
        if self.started and self.on_listening is not None:
            self.on_listening()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Begin the app's shutdown, then uvicorn's: close listeners, wait for open requests, lifespan."""
        begin_shutdown(self.imagegate_app)
        await super().shutdown(sockets)


def with_header_timeout(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol, closing a connection whose request headers do not arrive within `seconds`.

    uvicorn bounds only the idle time between requests; a client trickling headers (or sending nothing after
    connecting) would otherwise hold its connection forever. The clock restarts after each response.
    """
    base: Any = AutoHTTPProtocol

    class HeaderTimeoutProtocol(base):  # type: ignore[misc]
        _header_timer: asyncio.TimerHandle | None = None
        _cycle_when_armed: object = None

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._arm_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._cycle_when_armed = self.cycle  # a request whose headers are complete has a new cycle
            self._header_timer = self.loop.call_later(seconds, self._headers_overdue)

        def _headers_overdue(self) -> None:
            if self.cycle is self._cycle_when_armed and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol


def shutdown_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config options for shutdown and connection limits (use with DrainingServer)."""
    return {
        "timeout_graceful_shutdown": int(settings.shutdown_grace_seconds) + ANSWER_MARGIN_SECONDS,
        "http": with_header_timeout(settings.http_header_timeout_seconds),
        "timeout_keep_alive": settings.http_keepalive_seconds,
        "limit_concurrency": settings.max_connections,
    }
