"""Reading what a `codex exec` run left behind: its session id, its image (fitted), and why there is none.

Codex versions in use store the image in different places; newest layout first:
1. 0.159+: the session rollout's `item_completed` event whose item kind starts with `image_gen`;
2. 0.141+: the rollout's `image_generation_end` / `image_generation_call` payload;
3. older: the newest file in `$CODEX_HOME/generated_images/<session id>/`;
4. a file the model saved in the job's workdir.
All of it is file work: call these functions in a thread.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from imagegate.backends.base import BackendRequest

PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
SESSION_ID = re.compile(r"session id:\s*([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
QUOTA = re.compile(r"usage_limit_reached|usage limit|rate limit|\b429\b|too many requests", re.IGNORECASE)
# An error line Codex writes itself: "ERROR: …", or a tracing line "2026-…Z ERROR codex_core: …".
ERROR_LINE = re.compile(r"^\s*(?:\d{4}-\d\d-\d\dT\S+\s+)?ERROR\b:?\s*")
RESETS_IN_SECONDS = re.compile(r"resets_in_seconds\W+(\d+)")
TRY_AGAIN = re.compile(
    r"try again in\s+((?:\d+\s*(?:days?|hours?|hrs?|minutes?|mins?|seconds?|secs?|[dhms])\W*)+)", re.IGNORECASE
)
DURATION_PART = re.compile(r"(\d+)\s*(days?|hours?|hrs?|minutes?|mins?|seconds?|secs?|[dhms])", re.IGNORECASE)
RESETS_AT = re.compile(r"resets_at\W+(\d{10})")
REFUSAL = re.compile(
    r"can(?:no|')t (?:help|create|generate|make)|unable to (?:create|generate)|content polic|not able to (?:create|"
    r"generate)|refuse|violat",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class FoundImage:
    """Image bytes and where they came from (for the job's log)."""

    data: bytes
    source: str


def strip_ansi(text: str) -> str:
    """Text without terminal colour codes."""
    return ANSI.sub("", text)


def session_id(stderr: str) -> str | None:
    """The session id from Codex's header, also when colour codes wrap the label."""
    match = SESSION_ID.search(strip_ansi(stderr))
    return match[1].lower() if match else None


def find_image(*, codex_home: Path, session: str | None, workdir: Path, started: datetime) -> FoundImage | None:
    """The run's image from the newest layout that has one."""
    if session:
        for rollout in _rollouts(codex_home, session):
            found = image_from_rollout(rollout, allowed_roots=(codex_home, workdir))
            if found is not None:
                return found
        generated = _newest_file(codex_home / "generated_images" / session, since=None)
        if generated is not None:
            return FoundImage(generated.read_bytes(), f"generated_images/{session}/{generated.name}")
    saved = _newest_file(workdir, since=started, skip_prefix="input-")
    if saved is not None:
        return FoundImage(saved.read_bytes(), f"workdir/{saved.name}")
    return None


def _rollouts(codex_home: Path, session: str) -> list[Path]:
    sessions = codex_home / "sessions"
    if not sessions.is_dir():
        return []
    return sorted(sessions.glob(f"*/*/*/rollout-*{session}.jsonl"), reverse=True)


def image_from_rollout(path: Path, *, allowed_roots: tuple[Path, ...]) -> FoundImage | None:
    """The last image a rollout records, read a line at a time (rollouts hold megabytes of base64)."""
    found: FoundImage | None = None
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if "image_gen" not in line and "imageGeneration" not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            image = _image_in_record(record, allowed_roots)
            if image is not None:
                found = image
    return found


def _image_in_record(record: Any, allowed_roots: tuple[Path, ...]) -> FoundImage | None:
    if not isinstance(record, dict):
        return None
    payload: dict[str, Any] = record["payload"] if isinstance(record.get("payload"), dict) else record
    kind = str(payload.get("type", ""))
    if kind in ("item_completed", "item.completed"):
        item = payload.get("item")
        if isinstance(item, dict) and _snake(str(item.get("type") or item.get("kind") or "")).startswith("image_gen"):
            return _decoded(item.get("result"), "rollout item_completed") or _saved(item, allowed_roots)
        return None
    if kind in ("image_generation_end", "image_generation_call"):
        return _decoded(payload.get("result"), f"rollout {kind}") or _saved(payload, allowed_roots)
    return None


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _decoded(value: Any, source: str) -> FoundImage | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return FoundImage(base64.b64decode(value, validate=True), source)
    except (binascii.Error, ValueError):
        return None


def _saved(payload: dict[str, Any], allowed_roots: tuple[Path, ...]) -> FoundImage | None:
    """An image the event says it saved, if it lies inside the account's home or the workdir."""
    saved = payload.get("saved_path")
    if not isinstance(saved, str):
        return None
    path = Path(saved).resolve()
    if not any(path.is_relative_to(root.resolve()) for root in allowed_roots) or not path.is_file():
        return None
    return FoundImage(path.read_bytes(), f"saved_path {path.name}")


def _newest_file(folder: Path, *, since: datetime | None, skip_prefix: str | None = None) -> Path | None:
    if not folder.is_dir():
        return None
    candidates = [
        path
        for path in folder.iterdir()
        if path.is_file()
        and path.suffix.lower() in IMAGE_SUFFIXES
        and not (skip_prefix and path.name.startswith(skip_prefix))
        and (since is None or datetime.fromtimestamp(path.stat().st_mtime, UTC) >= since - timedelta(seconds=2))
    ]
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)


def codex_errors(*, stderr: str, instruction: str, codex_home: Path, session: str | None) -> str:
    """Codex's own error messages: the rollout's error events and stderr's ERROR lines, never the prompt's echo.

    Codex repeats the instruction (and the model may quote it) in its output, so any line found inside the
    instruction is dropped: a caller cannot write an error that rests an account for everyone.
    """
    lines = [line for line in without_echo(strip_ansi(stderr), instruction).splitlines() if ERROR_LINE.match(line)]
    if session:
        for rollout in _rollouts(codex_home, session):
            lines += rollout_errors(rollout)
    return "\n".join(line for line in lines if not _echoes(line, instruction))


def without_echo(text: str, instruction: str) -> str:
    """The text with the instruction, and each of its lines, cut out wherever they are repeated."""
    text = text.replace(instruction, "\n")
    for line in sorted({part.strip() for part in instruction.splitlines()}, key=len, reverse=True):
        if len(line) >= 4:
            text = text.replace(line, "")
    return text


def _echoes(line: str, instruction: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and (stripped in instruction or _error_text(stripped) in instruction)


def _error_text(line: str) -> str:
    return ERROR_LINE.sub("", line, count=1).strip() or line


def rollout_errors(path: Path) -> list[str]:
    """The messages of a rollout's error events (Codex's own, not the conversation)."""
    messages = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if '"error"' not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            payload = record.get("payload") if isinstance(record, dict) else None
            if isinstance(payload, dict) and payload.get("type") == "error":
                messages.append(f"ERROR: {payload.get('message', '')}")
    return messages


def quota_reset(errors: str, now: datetime) -> datetime | None:
    """When Codex's error says the account's usage limit resets; None when it is not a quota error."""
    text = strip_ansi(errors)
    if not QUOTA.search(text):
        return None
    if match := RESETS_IN_SECONDS.search(text):
        return now + timedelta(seconds=int(match[1]))
    if match := RESETS_AT.search(text):
        return datetime.fromtimestamp(int(match[1]), UTC)
    if match := TRY_AGAIN.search(text):
        seconds = sum(int(n) * _unit_seconds(unit) for n, unit in DURATION_PART.findall(match[1]))
        return now + timedelta(seconds=seconds or 3600)
    return now + timedelta(hours=1)


def _unit_seconds(unit: str) -> int:
    first = unit.lower()[0]
    return {"d": 86_400, "h": 3600, "m": 60, "s": 1}[first]


def refused(stdout: str, instruction: str) -> bool:
    """True when the model's own words (not an echo of the instruction) say it declined the request."""
    own = [
        line for line in without_echo(strip_ansi(stdout), instruction).splitlines() if not _echoes(line, instruction)
    ]
    return bool(REFUSAL.search("\n".join(own)))


def fit(data: bytes, request: BackendRequest) -> tuple[bytes, tuple[int, int]]:
    """Codex ignores the asked size: crop to its aspect and resize, then encode; returns bytes and Codex's size."""
    with Image.open(io.BytesIO(data)) as source:
        delivered = source.size
        image = source.convert("RGBA" if request.output_format in ("png", "webp") else "RGB")
    if request.size != "auto" and image.size != (request.width, request.height):
        image = ImageOps.fit(image, (request.width, request.height), method=Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(
        buffer, format=PIL_FORMATS[request.output_format], **({"quality": 92} if request.output_format != "png" else {})
    )
    return buffer.getvalue(), delivered
