"""A /health prober in a process of its own, so its figures are the server's, not a busy client loop's.

python -m bench.probe URL --timeout SECONDS --interval SECONDS: probes until its stdin closes, then prints one
JSON object: every answered probe's latency (seconds), the other statuses seen and how many probes failed.
Each probe is a new connection (as a load balancer's or an orchestrator's), so connecting is part of what it
measures; a probe not answered within the timeout counts as unanswered.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

SLOW_SECONDS = 0.1


def probe(host: str, port: int, timeout: float) -> tuple[int, float]:
    """One GET /health on a new connection: the status code (0 when not a status line) and the connect time."""
    deadline = time.monotonic() + timeout
    began = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        connected = time.perf_counter() - began
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        received = b""
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    head = received.split(b"\r\n", 1)[0].split()
    return (int(head[1]) if len(head) >= 2 and head[1].isdigit() else 0), connected


def main(argv: list[str]) -> int:
    """Probe until stdin closes; print what was seen."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.01)
    args = parser.parse_args(argv)
    address = urlsplit(args.url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    stop = threading.Event()

    def until_stdin_closes() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    answered: list[float] = []
    statuses: dict[str, int] = {}
    unanswered = 0
    slow: list[tuple[float, float, float]] = []  # (when, connect ms, total ms) of answers slower than SLOW_SECONDS
    started = time.perf_counter()
    while not stop.is_set():
        began = time.perf_counter()
        try:
            status, connected = probe(host, port, args.timeout)
        except OSError:  # refused, reset, or not answered in time
            unanswered += 1
            continue
        if status == 200:
            answered.append(time.perf_counter() - began)
            if answered[-1] > SLOW_SECONDS:
                slow.append((round(began - started, 2), round(connected * 1000, 1), round(answered[-1] * 1000, 1)))
        else:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        stop.wait(args.interval)
    print(json.dumps({"answered": answered, "statuses": statuses, "unanswered": unanswered, "slow": slow}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
