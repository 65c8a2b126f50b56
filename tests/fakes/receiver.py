"""A webhook receiver on loopback: records every POST and answers with the statuses a test scripts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass(frozen=True)
class Received:
    """One POST the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes

    def verified(self, secret: str) -> Any:
        """The payload after checking its Standard Webhooks signature with the library (raises if it is wrong)."""
        return Webhook(secret).verify(self.body, self.headers)


class Receiver:
    """Thread-safe log of what arrived; answers the scripted statuses in turn, then 200."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.statuses: list[int] = []
        self._changed = threading.Condition()
        self.url = ""

    def answer(self) -> int:
        """The status for the next request."""
        with self._changed:
            return self.statuses.pop(0) if self.statuses else 200

    def record(self, item: Received) -> None:
        """Keep a request and wake waiters."""
        with self._changed:
            self.received.append(item)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """At least `count` requests, or AssertionError after the timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"only {len(self.received)} of {count} webhooks arrived"
                self._changed.wait(left)
            return list(self.received)


@contextmanager
def receiver() -> Iterator[Receiver]:
    """A running receiver at receiver.url (http://127.0.0.1:PORT/hook)."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            status = state.answer()
            # Recorded before answering: the log is in arrival order, and the sender's next try comes after it.
            state.record(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
