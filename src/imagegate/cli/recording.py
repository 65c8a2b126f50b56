"""The announcing server process: it records in the data folder where it really listens once its port is bound
(a `--port` of its own, or the port chosen for 0), so the CLI's links name it, and removes the record as it stops."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from imagegate import listening
from imagegate.serving import DrainingServer
from imagegate.settings import Settings

log = logging.getLogger(__name__)


class RecordingServer(DrainingServer):
    """A DrainingServer that records its listening address between its start and its stop."""

    def __init__(
        self, config: uvicorn.Config, app: FastAPI, settings: Settings, on_listening: Callable[[], None]
    ) -> None:
        super().__init__(config, app, on_listening=self._record_then_say)
        self.settings = settings
        self.say = on_listening

    def _record_then_say(self) -> None:
        bound = [sock.getsockname() for listener in self.servers for sock in listener.sockets]
        port = int(bound[0][1]) if bound else self.settings.port
        try:
            listening.write_record(self.settings, self.settings.host, port)
        except OSError as error:  # the CLI's links fall back to the settings; serving does not depend on it
            log.warning("cannot record the listening address in the data folder: %s", error.strerror)
        self.say()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """The server's shutdown, then the record removed (uvicorn then re-raises SIGTERM, ending the process)."""
        try:
            await super().shutdown(sockets)
        finally:
            listening.remove_record(self.settings)
