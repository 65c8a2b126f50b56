"""`imagegate serve` bounds connections (slow headers, stalled bodies, idle sockets, too many); --workers N."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import pytest
from sqlalchemy import func, select

from imagegate import __version__
from imagegate.db import create_engine
from imagegate.jobs.models import Worker
from tests.fakes.postgres import free_port
from tests.fakes.server import ServerProcess, base_env, imagegate, serve, serve_env, until

pytestmark = pytest.mark.acceptance
# Far beyond every timeout under test: a socket still open then was held, not merely slow to close.
WAIT_SECONDS = 60


@contextmanager
def _connect(server: ServerProcess) -> Iterator[socket.socket]:
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname or "127.0.0.1", address.port or 80), timeout=WAIT_SECONDS) as s:
        yield s


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket.timeout if it never does)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("strict")
    env = base_env(
        IMAGEGATE_ADMIN_PASSWORD="x" * 16,
        IMAGEGATE_HTTP_HEADER_TIMEOUT_SECONDS="1",
        IMAGEGATE_HTTP_BODY_TIMEOUT_SECONDS="1",
    )
    with serve(env, folder) as server:
        yield server


def test_a_connection_that_sends_nothing_is_closed(strict_server: ServerProcess) -> None:
    with _connect(strict_server) as sock:
        assert _read_until_closed(sock) == b""


def test_headers_trickling_in_are_cut_off(strict_server: ServerProcess) -> None:
    with _connect(strict_server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")  # and never the blank line
        assert _read_until_closed(sock) == b""


def test_a_body_that_stops_arriving_is_answered_408(strict_server: ServerProcess) -> None:
    with _connect(strict_server) as sock:
        sock.sendall(
            b"POST /v1/images/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer ig_whatever\r\nContent-Length: 100\r\n\r\n" + b'{"prompt": "'
        )
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request_timeout" in answer


def _read_response(sock: socket.socket) -> bytes:
    """One whole response (head and Content-Length body), however the bytes are split on the wire."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, body = received.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_a_keep_alive_connection_is_still_served_within_the_timeouts(strict_server: ServerProcess) -> None:
    with _connect(strict_server) as sock:
        for _ in range(2):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert _read_response(sock).startswith(b"HTTP/1.1 200")


def test_connections_beyond_the_cap_get_503_but_liveness_is_still_answered(tmp_path: Path) -> None:
    env = base_env(IMAGEGATE_ADMIN_PASSWORD="x" * 16, IMAGEGATE_MAX_CONNECTIONS="3")
    with serve(env, tmp_path) as server, ExitStack() as held:
        for _ in range(3):
            held.enter_context(_connect(server)).sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        _read_so_far(server)
        with _connect(server) as extra:
            extra.sendall(b"GET /ready HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert extra.recv(65536).startswith(b"HTTP/1.1 503")
        # A server at its cap is alive: a liveness probe failing now would get it restarted, its requests lost.
        with _connect(server) as probe:
            probe.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert _read_response(probe).startswith(b"HTTP/1.1 200")


def _read_so_far(server: ServerProcess) -> None:
    """A /health round trip on a new connection: the server has then read what other connections sent before."""
    with _connect(server) as probe:
        probe.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert _read_response(probe).startswith(b"HTTP/1.1 200")


def test_the_cap_admits_that_many_requests_whatever_probes_and_idle_connections_are_open(tmp_path: Path) -> None:
    env = base_env(IMAGEGATE_ADMIN_PASSWORD="x" * 16, IMAGEGATE_MAX_CONNECTIONS="3")
    with serve(env, tmp_path) as server, ExitStack() as held:
        for _ in range(2):  # two requests under way, their headers not complete yet
            held.enter_context(_connect(server)).sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        held.enter_context(_connect(server))  # a probe's connection, its request not sent yet
        answered = held.enter_context(_connect(server))  # a probe answered, its connection kept open
        answered.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert _read_response(answered).startswith(b"HTTP/1.1 200")
        _read_so_far(server)
        # The third request of a cap of 3: uvicorn's check counted six open connections, this one among them.
        with _connect(server) as third:
            third.sendall(b"GET /ready HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert _read_response(third).startswith(b"HTTP/1.1 200")
            held.enter_context(_connect(server)).sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
            _read_so_far(server)
            with _connect(server) as fourth:  # three under way again: the fourth is one beyond the cap
                fourth.sendall(b"GET /ready HTTP/1.1\r\nHost: localhost\r\n\r\n")
                assert _read_response(fourth).startswith(b"HTTP/1.1 503")


def test_the_cap_counts_the_requests_under_way_but_not_the_one_it_judges() -> None:
    from imagegate.serving import RequestCap

    cap = RequestCap(2)
    first, second, third = object(), object(), object()
    cap.begin(first)
    assert not cap.refuses(first, running_tasks=0)
    cap.begin(second)
    assert not cap.refuses(second, running_tasks=1)  # the second of two: within the cap
    assert cap.refuses(third, running_tasks=0)  # two under way besides it
    cap.begin(third)
    assert cap.refuses(third, running_tasks=0)
    cap.end(first)
    assert not cap.refuses(third, running_tasks=1)
    assert cap.refuses(third, running_tasks=2)  # requests whose connections are gone still run
    cap.end(first)  # ended twice (answered, then its connection lost): counted once
    assert cap.refuses(object(), running_tasks=0)
    assert not RequestCap(None).refuses(first, running_tasks=10**6)


def _health_probe(server: ServerProcess, request_id: str) -> bytes:
    """A raw GET /health with this request id; the response up to the end of its JSON body."""
    with _connect(server) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Request-ID: {request_id}\r\n\r\n".encode())
        received = b""
        while b"}" not in received:
            received += sock.recv(65536)
    return received


def test_liveness_is_answered_by_the_protocol_as_the_app_would(strict_server: ServerProcess) -> None:
    head, body = _health_probe(strict_server, "probe-1234-abcd").split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200")
    assert b"x-request-id: probe-1234-abcd" in head.lower()
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body) == {"status": "ok", "version": __version__}


def test_liveness_skips_the_app() -> None:
    from imagegate.serving import liveness_answer

    scope = {"method": "GET", "path": "/health", "root_path": "", "headers": [], "server": ("127.0.0.1", 8000)}
    answer = liveness_answer(scope, skip_port=None)
    assert answer is not None
    assert answer[0]["status"] == 200
    assert liveness_answer({**scope, "path": "/healthz"}, skip_port=None) is None
    assert liveness_answer({**scope, "method": "POST"}, skip_port=None) is None
    assert liveness_answer(scope, skip_port=8000) is None  # the openai-image-gen listener's own /health
    assert liveness_answer({**scope, "root_path": "/gate", "path": "/gate/health"}, skip_port=None) is not None


def test_liveness_answered_by_the_protocol_is_logged_and_counted(strict_server: ServerProcess) -> None:
    _health_probe(strict_server, "probe-counted-5678")
    until(lambda: "probe-counted-5678" in strict_server.output(), "the probe's access line")
    line = next(line for line in strict_server.output().splitlines() if "probe-counted-5678" in line)
    assert "GET /health 200" in line
    assert "route=/health" in line
    scraped = httpx2.get(f"{strict_server.url}/metrics", timeout=WAIT_SECONDS).text.splitlines()
    assert any(
        line.startswith("imagegate_http_requests_total{") and 'route="/health"' in line and 'status="200"' in line
        for line in scraped
    )
    assert any(line.startswith('imagegate_http_request_duration_seconds_count{route="/health"}') for line in scraped)


def test_the_uvicorn_hook_liveness_and_admission_rely_on_is_still_called() -> None:
    import inspect

    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    from imagegate.serving import START_HOOK

    # A private method of uvicorn's httptools protocol: an upgrade that renames it or stops calling it where a
    # request's headers are complete would make /health queue behind requests again, silently.
    assert hasattr(AutoHTTPProtocol, START_HOOK)
    assert f"self.{START_HOOK}(" in inspect.getsource(AutoHTTPProtocol)


def test_a_port_already_taken_is_said_and_never_announced_as_listening(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = base_env(IMAGEGATE_ADMIN_PASSWORD="x" * 16)
        result = imagegate("serve", "--port", str(port), env=env, cwd=tmp_path)
    assert result.returncode != 0
    assert "listening on" not in result.stdout + result.stderr
    assert "address already in use" in (result.stdout + result.stderr).lower()


@contextmanager
def _serve_processes(env: dict[str, str], cwd: Path, workers: int) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`imagegate serve --workers N`, healthy; the caller stops it (it is killed if still running afterwards)."""
    port = free_port()
    with open(cwd / "workers.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "imagegate.cli", "serve", "--port", str(port), "--workers", str(workers)],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        until(lambda: process.poll() is not None or _healthy(url), "the server processes to start")
        assert process.poll() is None, (cwd / "workers.log").read_text()
        yield url, process
    finally:
        if process.poll() is None:
            _kill_all(process)
            process.wait(timeout=30)


def _kill_all(process: subprocess.Popen[str]) -> None:
    """The supervisor and the servers it forked (each in its own process group, children of it)."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    pids = [int(pid) for pid in children.read_text().split()] if children.exists() else []
    for pid in [*pids, process.pid]:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _healthy(url: str) -> bool:
    try:
        return httpx2.get(f"{url}/health", timeout=1).status_code == 200
    except httpx2.HTTPError:
        return False


def _registered_workers(database_url: str) -> int:
    async def count() -> int:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as connection:
                return int(await connection.scalar(select(func.count()).select_from(Worker)) or 0)
        finally:
            await engine.dispose()

    return asyncio.run(count())


def test_several_server_processes_share_the_port_the_queue_and_the_metrics(database_url: str, tmp_path: Path) -> None:
    env, headers = serve_env(database_url, tmp_path)
    jobs = 12
    with _serve_processes(env, tmp_path, workers=2) as (url, process):
        until(lambda: _registered_workers(database_url) == 2, "both processes' schedulers to register")
        for i in range(jobs):  # a new connection each time: the kernel hands them to either process
            response = httpx2.post(f"{url}/v1/images/generate", json={"prompt": f"p{i}"}, headers=headers, timeout=60)
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "succeeded"
        line = f'imagegate_jobs_finished_total{{backend="fake",model="fake",status="succeeded"}} {jobs}.0'
        until(lambda: line in httpx2.get(f"{url}/metrics", timeout=10).text, line)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0
    assert _registered_workers(database_url) == 0  # each process drained and left cleanly


def test_a_port_already_taken_stops_several_processes_before_they_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = base_env(IMAGEGATE_ADMIN_PASSWORD="x" * 16)
        result = imagegate("serve", "--port", str(port), "--workers", "2", env=env, cwd=tmp_path)
    assert result.returncode == 3
    assert "listening on" not in result.stdout + result.stderr
    assert "address already in use" in (result.stdout + result.stderr).lower()


def test_serve_runs_on_uvloop_and_httptools(tmp_path: Path) -> None:
    import uvicorn
    import uvloop
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from imagegate.serving import shutdown_options
    from imagegate.settings import Settings

    config = uvicorn.Config("imagegate.app:create_app", **shutdown_options(Settings(data_dir=tmp_path)))
    factory = config.get_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    assert issubclass(config.http, HttpToolsProtocol)  # type: ignore[arg-type]


async def test_new_requests_start_a_few_per_turn_of_the_event_loop_in_order() -> None:
    from imagegate.serving import Admission

    loop = asyncio.get_running_loop()
    turn = [0]

    def count_turns() -> None:
        turn[0] += 1
        loop.call_soon(count_turns)  # runs again in the next turn, after the loop has polled its sockets

    loop.call_soon(count_turns)
    admission = Admission(per_turn=4)
    started: list[tuple[int, int]] = []

    def begin(i: int) -> None:
        started.append((i, turn[0]))

    for i in range(10):  # a burst read in one turn
        admission.start(loop, functools.partial(begin, i))
    async with asyncio.timeout(30):
        while len(started) < 10:
            await asyncio.sleep(0)
    assert [i for i, _turn in started] == list(range(10))
    per_turn = Counter(when for _i, when in started)
    assert max(per_turn.values()) == 4
    assert len(per_turn) >= 3


async def test_what_start_up_made_is_kept_out_of_the_collectors_full_passes() -> None:
    import gc

    import uvicorn
    from fastapi import FastAPI

    from imagegate.serving import DrainingServer

    app = FastAPI()
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), lifespan="off", log_config=None)
    config.load()
    server = DrainingServer(config, app)
    server.lifespan = config.lifespan_class(config)  # what Server._serve sets before startup
    gc.unfreeze()
    try:
        await server.startup()
        assert server.started
        assert gc.get_freeze_count() > 0
        await server.shutdown()
    finally:
        gc.unfreeze()
