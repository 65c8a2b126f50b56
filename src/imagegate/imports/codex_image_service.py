"""`imagegate import codex-image-service`: its keys (with their hashes) and, optionally, its history and images.

The original stores sha256(raw key) exactly as ImageGate does, so an imported key's hash is kept and every
`cimg_…` secret keeps working. History rows keep their ids and expiry; their files are stored under their
original names, so the old `/generated/<file>` URLs still resolve. A second run changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.db import utcnow
from imagegate.errors import ImagegateError, InvalidImage
from imagegate.images import SERVED_NAME, ImageInfo, inspect_image
from imagegate.jobs import queries
from imagegate.jobs.models import Job, JobImage, JobKind, JobStatus
from imagegate.jobs.requests import SIZE
from imagegate.keys import audit
from imagegate.keys.models import SCOPES, ApiKey
from imagegate.keys.service import new_handle
from imagegate.settings import Settings
from imagegate.storage import Storage

SOURCE = "codex-image-service"
KEY_COLUMNS = {"id", "name", "key_hash", "enabled", "created_at", "last_used_at"}
HISTORY_COLUMNS = {"id", "api_key_id", "prompt", "status", "image_paths", "created_at", "expires_at"}
HASH = re.compile(r"^[0-9a-f]{64}$")
HANDLE = re.compile(r"^key_[A-Za-z0-9_-]{12}$")
KEPT_STATUSES = {"succeeded", "failed", "expired"}
MAX_LOG_CHARS = 64 * 1024


class NotASourceDatabase(ImagegateError):
    """That file is not a codex-image-service database."""

    status = 400
    code = "invalid_request"


@dataclass
class SourceKey:
    """One row of the original's api_keys."""

    id: str
    name: str
    key_hash: str
    enabled: bool
    created_at: datetime
    last_used_at: datetime | None
    requests_count: int | None


@dataclass
class SourceRequest:
    """One row of the original's image_requests."""

    row: dict[str, Any]

    @property
    def id(self) -> str:
        """The job id, kept."""
        return str(self.row["id"])

    def file_names(self) -> list[str]:
        """The names of its image files (the original keeps paths under static/generated/)."""
        raw = self.row.get("image_paths")
        try:
            paths = json.loads(raw) if isinstance(raw, str) else (raw or [])
        except ValueError:
            return []
        return [Path(str(p)).name for p in paths if isinstance(p, str)] if isinstance(paths, list) else []


@dataclass
class Report:
    """What an import did (or, dry, would do), line by line and in numbers."""

    lines: list[str] = field(default_factory=list)
    keys_imported: int = 0
    keys_present: int = 0
    jobs_imported: int = 0
    jobs_present: int = 0
    images_imported: int = 0
    files_missing: int = 0

    def say(self, line: str) -> None:
        """Add a line to the report."""
        self.lines.append(line)


def read_source(path: Path) -> tuple[list[SourceKey], list[SourceRequest]]:
    """Every key and history row of the original's database (blocking: call in a thread)."""
    if not path.is_file():
        raise NotASourceDatabase(f"{path.name}: no such file.")
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise NotASourceDatabase(f"{path.name} cannot be opened as SQLite ({exc}).") from None
    try:
        connection.row_factory = sqlite3.Row
        tables = _tables(connection, path)
        if "api_keys" not in tables or not KEY_COLUMNS.issubset(tables["api_keys"]):
            raise NotASourceDatabase(
                f"{path.name} is not a codex-image-service database: it has no api_keys table with "
                f"{', '.join(sorted(KEY_COLUMNS))}."
            )
        keys = [_key(dict(row)) for row in connection.execute("SELECT * FROM api_keys ORDER BY created_at, id")]
        history: list[SourceRequest] = []
        if "image_requests" in tables and HISTORY_COLUMNS.issubset(tables["image_requests"]):
            history = [
                SourceRequest(dict(row))
                for row in connection.execute("SELECT * FROM image_requests ORDER BY created_at")
            ]
        return keys, history
    finally:
        connection.close()


def _tables(connection: sqlite3.Connection, path: Path) -> dict[str, set[str]]:
    try:
        names = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {name: {c[1] for c in connection.execute(f'PRAGMA table_info("{name}")')} for name in names}
    except sqlite3.DatabaseError:
        raise NotASourceDatabase(f"{path.name} is not an SQLite database.") from None


def _key(row: dict[str, Any]) -> SourceKey:
    return SourceKey(
        id=str(row["id"]),
        name=str(row["name"] or row["id"])[:200],
        key_hash=str(row["key_hash"] or "").lower(),
        enabled=bool(row["enabled"]),
        created_at=parse_time(row["created_at"]) or utcnow(),
        last_used_at=parse_time(row["last_used_at"]),
        requests_count=row.get("requests_count"),
    )


def parse_time(value: Any) -> datetime | None:
    """A timestamp as the original stored it (ISO text, naive meaning UTC, or epoch seconds)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def run_import(
    *,
    sessions: async_sessionmaker[AsyncSession],
    storage: Storage,
    settings: Settings,
    database: Path,
    files: Path | None,
    dry_run: bool,
) -> Report:
    """Bring the keys over, and with `files` the history and its images; with dry_run only say what would be done."""
    keys, history = await asyncio.to_thread(read_source, database)
    report = Report()
    handles: dict[str, tuple[int | None, str]] = {}
    async with sessions() as session:
        transaction = await session.begin()
        try:
            for source in keys:
                handles[source.id] = await _import_key(session, source, report, dry_run)
            if files is not None:
                route = _history_route(settings)
                for request in history:
                    await _import_job(session, storage, settings, request, files, handles, route, report, dry_run)
        except BaseException:
            await transaction.rollback()
            raise
        # A dry run did everything in the transaction (so conflicts show) and keeps none of it.
        await (transaction.rollback() if dry_run else transaction.commit())
    if files is None and history:
        report.say(
            f"{len(history)} history row(s) left behind: pass --files DIR (its static/generated/) to bring them."
        )
    return report


async def _import_key(
    session: AsyncSession, source: SourceKey, report: Report, dry_run: bool
) -> tuple[int | None, str]:
    existing = await session.scalar(select(ApiKey).where(ApiKey.token_hash == source.key_hash))
    if existing is not None:
        report.keys_present += 1
        report.say(f"key {existing.handle} ({source.name}): already here")
        return existing.id, existing.handle
    if not HASH.match(source.key_hash):
        report.say(f"key {source.id} ({source.name}): skipped, its key_hash is not a sha256 hex digest")
        return None, source.id[:32]
    handle = source.id if HANDLE.match(source.id) else new_handle()
    if await session.scalar(select(ApiKey.id).where(ApiKey.handle == handle)) is not None:
        handle = new_handle()
    state = "enabled" if source.enabled else "disabled"
    report.keys_imported += 1
    report.say(f"key {handle} ({source.name}, {state}): {'would import' if dry_run else 'imported'}")
    key = ApiKey(
        handle=handle,
        name=source.name,
        token_hash=source.key_hash,
        enabled=source.enabled,
        created_at=source.created_at,
        last_used_at=source.last_used_at,
        scopes=list(SCOPES),
    )
    session.add(key)
    await session.flush()
    audit.record(
        session=session,
        actor="cli",
        action="key.import",
        handle=handle,
        source=SOURCE,
        original_id=source.id,
        name=source.name,
        enabled=source.enabled,
        requests_count=source.requests_count,
    )
    return key.id, handle


def _history_route(settings: Settings) -> tuple[str, str]:
    """The model and backend imported history is filed under: a Codex backend's, else the default model's."""
    for model, backend in settings.models.items():
        if settings.backends[backend].type == "codex":
            return model, backend
    return settings.default_model, settings.models[settings.default_model]


async def _import_job(
    session: AsyncSession,
    storage: Storage,
    settings: Settings,
    request: SourceRequest,
    files: Path,
    handles: dict[str, tuple[int | None, str]],
    route: tuple[str, str],
    report: Report,
    dry_run: bool,
) -> None:
    if await queries.job_exists(session, request.id):
        report.jobs_present += 1
        report.say(f"job {request.id}: already here")
        return
    job = _job(request, handles, route, settings)
    images = [] if job.status != JobStatus.SUCCEEDED else await _images(request, files, report)
    if job.status == JobStatus.SUCCEEDED and not images:
        job.status = JobStatus.EXPIRED  # its files are not here (any more): the record stays, as after retention
    report.jobs_imported += 1
    report.images_imported += len(images)
    report.say(f"job {request.id} ({job.status}, {len(images)} image(s)): {'would import' if dry_run else 'imported'}")
    job.image_count = len(images)
    session.add(job)
    for index, (name, data, info) in enumerate(images):
        if not dry_run:
            await storage.put(f"images/{name}", data)
        session.add(
            JobImage(
                job_id=job.id,
                index=index,
                name=name,
                storage_key=f"images/{name}",
                width=info.width,
                height=info.height,
                format=info.format,
                bytes=info.bytes,
                sha256=info.sha256,
                created_at=job.finished_at or job.created_at,
            )
        )
    await session.flush()


def _job(
    request: SourceRequest, handles: dict[str, tuple[int | None, str]], route: tuple[str, str], settings: Settings
) -> Job:
    row = request.row
    key_id, handle = handles.get(str(row.get("api_key_id")), (None, str(row.get("api_key_id") or "unknown")[:32]))
    created = parse_time(row.get("created_at")) or utcnow()
    size = str(row.get("size") or "1024x1024")
    match = SIZE.match(size)
    width, height = (int(match[1]), int(match[2])) if match else (1024, 1024)
    status = str(row.get("status") or "failed")
    error = row.get("error")
    if status not in KEPT_STATUSES:
        status, error = JobStatus.FAILED, "It had not finished when the service moved to ImageGate."
    failed = status == JobStatus.FAILED
    expires = parse_time(row.get("expires_at")) or created + timedelta(days=settings.retention_days)
    if status == JobStatus.SUCCEEDED and expires <= utcnow():
        status = JobStatus.EXPIRED
    logs = f"--- stdout ---\n{row.get('stdout') or ''}\n--- stderr ---\n{row.get('stderr') or ''}\n"
    return Job(
        id=request.id[:40],
        kind=JobKind.IMAGE,
        key_id=key_id,
        key_handle=handle,
        status=status,
        model=route[0],
        backend=route[1],
        prompt=str(row.get("prompt") or ""),
        size=size[:32],
        width=width,
        height=height,
        quality=str(row.get("quality") or "auto")[:16],
        output_format="png",
        count=int(row.get("count") or 1),
        params={
            "imported_from": SOURCE,
            "duration_seconds": row.get("duration_seconds"),
            "output_sha256": row.get("output_sha256"),
        },
        fair_tag=0,
        attempts=1,
        error_code="backend_error" if failed else None,
        error_message=(str(error) if error else "Generation failed.") if failed else None,
        error_status=502 if failed else None,
        logs=logs[:MAX_LOG_CHARS],
        created_at=created,
        started_at=parse_time(row.get("started_at")),
        finished_at=parse_time(row.get("finished_at")) or created,
        expires_at=expires,
        inputs=[],
        images=[],
    )


async def _images(request: SourceRequest, files: Path, report: Report) -> list[tuple[str, bytes, ImageInfo]]:
    found = []
    for name in request.file_names():
        path = files / name
        if not SERVED_NAME.match(name) or not await asyncio.to_thread(path.is_file):
            report.files_missing += 1
            report.say(f"job {request.id}: file {name} not found in {files.name}/; skipped")
            continue
        data = await asyncio.to_thread(path.read_bytes)
        try:
            info = await asyncio.to_thread(inspect_image, data, param=name)
        except InvalidImage:
            report.files_missing += 1
            report.say(f"job {request.id}: file {name} is not an image; skipped")
            continue
        found.append((name, data, info))
    return found
