"""Running the app under uvicorn: shutdown that answers waiting requests first, and bounded connections."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.http.flow_control import service_unavailable

from imagegate import __version__
from imagegate.api.observe import NamedRoute, new_request_id, observe
from imagegate.app import begin_shutdown
from imagegate.logs import request_id_var
from imagegate.metrics import Metrics
from imagegate.settings import Settings

logger = logging.getLogger(__name__)
# After the jobs' grace period, interrupted jobs are settled and their waiters answer: this long is left for that.
ANSWER_MARGIN_SECONDS = 5
# New requests whose first step may run in one turn of the event loop (Admission): a few milliseconds each.
REQUESTS_STARTED_PER_TURN = 4
UVICORN_BACKLOG = 2048  # uvicorn's own default
LIVENESS_ROUTE = NamedRoute("/health")
# The hook in uvicorn's httptools protocol that starts each request's task (private: tests/test_serving.py checks
# it is still there and still called; without it, requests and /health go through the app like any other).
START_HOOK = "_start_asgi_task"
LIVENESS_BODY = json.dumps({"status": "ok", "version": __version__}, separators=(",", ":")).encode()


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
        # What start-up made lives as long as the process: kept out of the collector's full passes, which
        # would otherwise walk it all again while requests wait (the loop stalls for as long as one takes).
        gc.freeze()
        if self.started and self.on_listening is not None:
            self.on_listening()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Begin the app's shutdown, then uvicorn's: close listeners, wait for open requests, lifespan."""
        begin_shutdown(self.imagegate_app)
        await super().shutdown(sockets)


def liveness_answer(scope: dict[str, Any], skip_port: int | None) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The whole answer to `GET /health` (or HEAD) as ASGI messages, or None for any other request.

    Given by the HTTP protocol itself, in the callback that parsed the request: no task, no middleware, no
    database, and not refused at the connection cap (a server busy with its limit of held requests is alive,
    and a liveness probe failing then would restart it and lose them all). skip_port is the openai-image-gen
    listener's, whose /health has the original's shape and goes through its app.
    """
    if scope["method"] not in ("GET", "HEAD") or scope["path"] != scope.get("root_path", "") + "/health":
        return None
    server = scope.get("server")
    if skip_port is not None and server is not None and server[1] == skip_port:
        return None
    request_id = new_request_id(dict(scope["headers"]).get(b"x-request-id"))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(LIVENESS_BODY)).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    start = {"type": "http.response.start", "status": 200, "headers": headers}
    return start, {"type": "http.response.body", "body": LIVENESS_BODY, "more_body": False}


def observe_liveness(metrics: Metrics, scope: dict[str, Any], start: dict[str, Any], elapsed: float) -> None:
    """The protocol's /health answer counted and logged as the app's requests are (route /health)."""
    request_id = dict(start["headers"])[b"x-request-id"].decode("latin-1")
    token = request_id_var.set(request_id)
    try:
        observe(metrics, {**scope, "route": LIVENESS_ROUTE}, start["status"], elapsed)
    finally:
        request_id_var.reset(token)


def _send_now(cycle: Any, message: dict[str, Any]) -> None:
    """cycle.send(message) run to its end at once: it only ever awaits while writing is paused."""
    step = cycle.send(message)
    try:
        step.send(None)
    except StopIteration:
        return
    step.close()
    raise RuntimeError("the response could not be written at once")


class Admission:
    """New requests enter the event loop a few per turn of it, so the loop reads its sockets between them.

    A burst of connections is read in one turn; each request's task then runs its first step (middleware,
    body, key) in the next turn, all of them back to back: 500 requests arriving at once kept the loop away
    from its sockets for seconds, and a /health probe with them. Started `per_turn` at a time, the loop polls
    between batches. The work and its order are the same; only the turns are shorter.
    """

    def __init__(self, per_turn: int) -> None:
        self._per_turn = per_turn
        self._waiting: deque[Callable[[], None]] = deque()
        self._armed = False

    def start(self, loop: asyncio.AbstractEventLoop, begin: Callable[[], None]) -> None:
        """begin() now, or in a later turn when this turn has started its share already."""
        self._waiting.append(begin)
        if not self._armed:
            self._drain(loop)

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        for _ in range(min(self._per_turn, len(self._waiting))):
            self._waiting.popleft()()
        self._armed = True  # until the next turn, arrivals wait their turn
        loop.call_soon(self._next_turn, loop)

    def _next_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        self._armed = False
        if self._waiting:
            self._drain(loop)


class RequestCap:
    """At most `limit` requests under way at once (IMAGEGATE_MAX_CONNECTIONS); one beyond is answered 503 at once.

    A request is under way from its first byte until its response is complete or its connection is lost; a task
    still running after that counts too. The request being judged is not counted against itself, and neither is
    a connection that has sent nothing yet or whose request the protocol answered itself (/health). uvicorn's own
    check counted every open connection, the asking one included: a cap of 2,000 refused the 2,000th of 2,000
    held requests, and every request judged while a liveness probe's connection was open.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._under_way: set[object] = set()

    def begin(self, connection: object) -> None:
        """The connection's request has begun (its first byte was read)."""
        self._under_way.add(connection)

    def end(self, connection: object) -> None:
        """The connection's request is answered, or the connection is gone."""
        self._under_way.discard(connection)

    def refuses(self, connection: object, running_tasks: int) -> bool:
        """Whether the connection's request would be one beyond the limit (running_tasks: uvicorn's, not its own)."""
        if self.limit is None:
            return False
        others = len(self._under_way) - (connection in self._under_way)
        return others >= self.limit or running_tasks >= self.limit

    def app_for(self, connection: object, app: Any, running_tasks: int) -> Any:
        """The app to run the connection's request, now under way: uvicorn's 503 when it is one beyond the limit."""
        self.begin(connection)  # again for a pipelined request, whose predecessor's end removed it
        if not self.refuses(connection, running_tasks):
            return app
        logger.warning("a request beyond IMAGEGATE_MAX_CONNECTIONS (%s under way) answered 503", self.limit)
        return service_unavailable


def _answer_liveness(cycle: Any, answer: tuple[dict[str, Any], dict[str, Any]], metrics: Metrics | None) -> None:
    """The protocol's own /health answer written at once, then counted and logged."""
    started = time.perf_counter()
    for message in answer:
        _send_now(cycle, message)
    if metrics is not None:
        observe_liveness(metrics, cycle.scope, answer[0], time.perf_counter() - started)


def with_header_timeout(
    seconds: float, oig_port: int | None = None, metrics: Metrics | None = None, max_requests: int | None = None
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol, closing a connection whose request headers do not arrive within `seconds`.

    uvicorn bounds only the idle time between requests; a client trickling headers (or sending nothing after
    connecting) would otherwise hold its connection forever. The clock restarts after each response. It also
    answers `GET /health` itself (liveness_answer), so a probe never queues behind the requests being served,
    and refuses requests beyond max_requests under way (RequestCap) in place of uvicorn's limit_concurrency.
    """
    base: Any = AutoHTTPProtocol
    admission = Admission(REQUESTS_STARTED_PER_TURN)
    cap = RequestCap(max_requests)
    if not hasattr(base, START_HOOK):
        logger.warning("uvicorn's HTTP protocol has no %s: /health and admission go through the app", START_HOOK)

    class HeaderTimeoutProtocol(base):  # type: ignore[misc]
        _header_timer: asyncio.TimerHandle | None = None
        _cycle_when_armed: object = None

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            answer = None if self.flow.write_paused else liveness_answer(cycle.scope, oig_port)
            if answer is not None:
                _answer_liveness(cycle, answer, metrics)
                return
            app = cap.app_for(self, app, len(self.tasks))
            start = super()._start_asgi_task
            admission.start(self.loop, lambda: start(cycle, app))

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._arm_header_timer()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            cap.begin(self)

        def on_response_complete(self) -> None:
            cap.end(self)
            super().on_response_complete()
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            cap.end(self)
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


def shutdown_options(settings: Settings, metrics: Metrics | None = None) -> dict[str, Any]:
    """uvicorn.Config options for shutdown and connection limits (use with DrainingServer); metrics: the app's,
    where the protocol's own /health answers are counted."""
    oig_port = settings.oig_address[1] if settings.oig_address is not None else None
    return {
        "timeout_graceful_shutdown": int(settings.shutdown_grace_seconds) + ANSWER_MARGIN_SECONDS,
        "http": with_header_timeout(settings.http_header_timeout_seconds, oig_port, metrics, settings.max_connections),
        "timeout_keep_alive": settings.http_keepalive_seconds,
        # Judged by the protocol (RequestCap) where it can; uvicorn's own check counts what it should not.
        "limit_concurrency": None if hasattr(AutoHTTPProtocol, START_HOOK) else settings.max_connections,
        "backlog": listen_backlog(settings),
    }


def listen_backlog(settings: Settings) -> int:
    """Room in the kernel's accept queue for every connection allowed arriving at once, and probes beside them.

    (The kernel clamps it to net.core.somaxconn.)
    """
    return max(UVICORN_BACKLOG, 2 * settings.max_connections)


def run_processes(count: int, child: Callable[[int, Callable[[], None]], int]) -> int:
    """Run child(index, ready) in `count` forked processes and supervise them; the first failure's exit code.

    The first child starts alone (it migrates the database and sets up what every process shares) and calls
    ready() once it serves; the others are forked after it. SIGINT and SIGTERM are passed on, once, to every
    child: each runs in its own process group, so a terminal's Ctrl-C reaches them only through here, and each
    drains as a single server would. When one child fails, the others are stopped.
    """
    children: dict[int, int] = {}
    stopping = False

    def forward(signum: int, _frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        reader, writer = os.pipe()
        children[_fork(0, child, lambda: _say(writer), close=reader)] = 0
        os.close(writer)
        started = os.read(reader, 1)  # empty when the first child exits before it serves
        os.close(reader)
        for index in range(1, count if started else 1):
            if stopping:
                break
            children[_fork(index, child, lambda: None)] = index
        return _reap(children, forward, lambda: stopping)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _say(fd: int) -> None:
    os.write(fd, b".")
    os.close(fd)


def _fork(
    index: int, child: Callable[[int, Callable[[], None]], int], ready: Callable[[], None], close: int = -1
) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.setpgid(0, 0)
        if close >= 0:
            os.close(close)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        code = child(index, ready)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        logger.exception("server process %d failed", index)
    finally:
        os._exit(code)


def _reap(children: dict[int, int], forward: Callable[[int], None], stopping: Callable[[], bool]) -> int:
    """Wait for every child; after the first that fails, stop the rest."""
    code = 0
    while children:
        pid, status = os.wait()
        if children.pop(pid, None) is None:
            continue
        exit_code = os.waitstatus_to_exitcode(status)
        # uvicorn re-raises the signal it drained on, once done: that end is the one asked for.
        if stopping() and exit_code in (-signal.SIGTERM, -signal.SIGINT):
            continue
        if exit_code != 0 and code == 0:
            code = exit_code if exit_code > 0 else 1
            forward(signal.SIGTERM)
    return code
