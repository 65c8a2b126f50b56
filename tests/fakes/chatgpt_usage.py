"""A fake ChatGPT usage endpoint on loopback: answers by the bearer token, counts what it was asked."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

RESET_AT = 1_795_350_000


def hours_ago(hours: float) -> str:
    """A `last_refresh` stamp this long before now: token ages are judged against the wall clock."""
    return (datetime.now(UTC) - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def window(used: Any, seconds: int) -> dict[str, Any]:
    """One rate-limit window as the endpoint reports it."""
    return {"used_percent": used, "limit_window_seconds": seconds, "reset_at": RESET_AT}


def usage(primary: dict[str, Any] | None, secondary: dict[str, Any] | None = None, plan: str = "plus") -> Any:
    """A well-formed answer."""
    return {
        "plan_type": plan,
        "rate_limit": {"primary_window": primary, "secondary_window": secondary, "limit_reached": False},
    }


@dataclass
class FakeUsage:
    """What each token gets: a JSON-able answer, raw bytes (malformed), or an HTTP status."""

    answers: dict[str, Any] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    url: str = ""


def login(
    home: Path,
    access_token: str,
    *,
    refresh_token: str = "rt-secret-1",  # noqa: S107 - a fake login
    last_refresh: str | None = None,
) -> None:
    """Write an auth.json as `codex login` leaves it."""
    home.mkdir(parents=True, exist_ok=True)
    auth = {
        "OPENAI_API_KEY": None,
        "tokens": {
            "id_token": "id-secret",
            "access_token": access_token,
            "refresh_token": refresh_token,
            "account_id": "acc0123456789abcdef",
        },
        "last_refresh": last_refresh or hours_ago(4 * 24),
    }
    (home / "auth.json").write_text(json.dumps(auth))


@contextmanager
def fake_usage_endpoint() -> Iterator[FakeUsage]:
    """Serve the fake on 127.0.0.1 for the length of the block."""
    fake = FakeUsage()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            token = self.headers.get("Authorization", "").removeprefix("Bearer ")
            fake.requests.append(token)
            answer = fake.answers.get(token, 401)
            if isinstance(answer, int):
                self.send_response(answer)
                self.end_headers()
                return
            body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/backend-api/wham/usage"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
