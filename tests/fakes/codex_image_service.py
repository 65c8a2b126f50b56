"""The database and files of a codex-image-service install, in the original's schema, for import tests."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.fakes.backends import tiny_png

ACTIVE_KEY = "cimg_" + "A" * 31 + "activeKey123"
DISABLED_KEY = "cimg_" + "B" * 31 + "disabledK456"
ORIGINAL_SCHEMA = """
CREATE TABLE api_keys (
    id VARCHAR(64) PRIMARY KEY, name VARCHAR(200) NOT NULL, key_hash VARCHAR(64) NOT NULL UNIQUE,
    enabled BOOLEAN NOT NULL DEFAULT 1, created_at DATETIME NOT NULL, last_used_at DATETIME,
    requests_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE image_requests (
    id VARCHAR(64) PRIMARY KEY, api_key_id VARCHAR(64) REFERENCES api_keys(id), prompt TEXT NOT NULL,
    size VARCHAR(16), quality VARCHAR(16), count INTEGER, status VARCHAR(16) NOT NULL, image_paths JSON,
    stdout TEXT, stderr TEXT, error TEXT, duration_seconds FLOAT, created_at DATETIME NOT NULL,
    started_at DATETIME, finished_at DATETIME, expires_at DATETIME, workdir TEXT, codex_command TEXT,
    codex_home TEXT, output_sha256 VARCHAR(64)
);
"""


def handle_of(raw: str) -> str:
    """The original's public key id."""
    return "key_" + raw[-12:]


def build_original(folder: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """The original's database and static/generated/ folder: two keys, three rows with files, one failed row."""
    database, generated = folder / "codex-image-service.db", folder / "static" / "generated"
    generated.mkdir(parents=True)
    now = datetime.now(UTC).replace(tzinfo=None)
    stamp = (now - timedelta(days=1)).isoformat(sep=" ")
    expires = (now + timedelta(days=6)).isoformat(sep=" ")
    files: dict[str, bytes] = {}
    rows: list[tuple[str, str, str, str, str, str | None]] = []
    for index, (raw, colour) in enumerate(
        [(ACTIVE_KEY, (250, 0, 0)), (ACTIVE_KEY, (0, 250, 0)), (DISABLED_KEY, (0, 0, 250))]
    ):
        request_id = f"img_{index:02d}" + "f" * 20
        name = f"{request_id}.png"
        files[name] = tiny_png(colour, (32, 32))
        (generated / name).write_bytes(files[name])
        rows.append(
            (
                request_id,
                handle_of(raw),
                f"old picture {index}",
                "succeeded",
                json.dumps([f"static/generated/{name}"]),
                None,
            )
        )
    rows.append(
        ("img_03" + "f" * 20, handle_of(ACTIVE_KEY), "a failed one", "failed", "[]", "Codex exited with status 1")
    )
    connection = sqlite3.connect(database)
    connection.executescript(ORIGINAL_SCHEMA)
    for raw, name, enabled in [(ACTIVE_KEY, "ci", 1), (DISABLED_KEY, "old laptop", 0)]:
        connection.execute(
            "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?)",
            (handle_of(raw), name, hashlib.sha256(raw.encode()).hexdigest(), enabled, stamp, stamp, 7),
        )
    for request_id, key_id, prompt, status, paths, error in rows:
        connection.execute(
            "INSERT INTO image_requests (id, api_key_id, prompt, size, quality, count, status, image_paths, stdout,"
            " stderr, error, duration_seconds, created_at, started_at, finished_at, expires_at)"
            " VALUES (?, ?, ?, '1024x1024', 'medium', 1, ?, ?, 'ok', '', ?, 41.5, ?, ?, ?, ?)",
            (request_id, key_id, prompt, status, paths, error, stamp, stamp, stamp, expires),
        )
    connection.commit()
    connection.close()
    return database, generated, files
