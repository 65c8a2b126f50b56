"""Running the app under uvicorn: shutdown that answers waiting requests first."""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI

from imagegate.app import begin_shutdown
from imagegate.settings import Settings

# After the jobs' grace period, interrupted jobs are settled and their waiters answer: this long is left for that.
ANSWER_MARGIN_SECONDS = 5


class DrainingServer(uvicorn.Server):
    """uvicorn, telling the app to answer its waiting requests before it waits for them to finish."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.imagegate_app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Begin the app's shutdown, then uvicorn's: close listeners, wait for open requests, lifespan."""
        begin_shutdown(self.imagegate_app)
        await super().shutdown(sockets)


def shutdown_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config options for shutdown and connection limits (use with DrainingServer)."""
    return {"timeout_graceful_shutdown": int(settings.shutdown_grace_seconds) + ANSWER_MARGIN_SECONDS}
