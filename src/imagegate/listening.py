"""Where a data folder's server really listens: recorded once its port is bound, so the CLI's links name it even
when the server was started with `--port` or `--host` instead of the settings."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from imagegate.hosts import host_identity, pid_alive, same_host
from imagegate.settings import Settings

RECORD_NAME = "listening.json"
# A server listening on every address is reached on this machine through loopback.
WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104 (read, never bound)


def listen_url(host: str, port: int, root_path: str = "") -> str:
    """The base URL this machine reaches a server listening on host:port at."""
    reached = WILDCARD_HOSTS.get(host, host)
    shown = f"[{reached}]" if ":" in reached else reached
    return f"http://{shown}:{port}{root_path}".rstrip("/")


def record_path(settings: Settings) -> Path:
    """The record's file in the data folder."""
    return settings.data_dir / RECORD_NAME


def write_record(settings: Settings, host: str, port: int) -> None:
    """Say, for this process, where it listens (called once its port is bound); written whole or not at all."""
    path = record_path(settings)
    record = {"pid": os.getpid(), "host": host_identity(), "url": listen_url(host, port, settings.root_path)}
    partial = path.with_name(f".{RECORD_NAME}.{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial.write_text(json.dumps(record))
    partial.replace(path)


def remove_record(settings: Settings) -> None:
    """Remove the record at a clean stop, when it is this process's (another server may have written it since)."""
    path = record_path(settings)
    if _read(path).get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def recorded_url(settings: Settings) -> str | None:
    """The base URL a server of this data folder recorded, while that server's process is alive on this machine."""
    record = _read(record_path(settings))
    pid, host, url = record.get("pid"), record.get("host"), record.get("url")
    if not (isinstance(pid, int) and isinstance(host, str) and isinstance(url, str)):
        return None
    return url if same_host(host) and pid_alive(pid) else None


def _read(path: Path) -> dict[str, object]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
