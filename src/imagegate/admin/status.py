"""The status page: version, database, storage, backends with their last error, retention, and the effective
configuration with every secret masked."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncSession

from imagegate import __version__
from imagegate.admin.web import Admin, duration, page
from imagegate.jobs import queries
from imagegate.services import AppServices
from imagegate.settings import Settings

router = APIRouter(prefix="/admin", include_in_schema=False)
MASK = "********"
# Option and setting names that hold credentials, whatever backend or plugin they belong to.
SECRET_NAME = re.compile(r"(key|token|secret|password|passwd|credential|auth)", re.IGNORECASE)
NOT_SECRET = {"oig_anonymous_key"}  # a key's public handle, not a secret


@dataclass(frozen=True)
class LastError:
    """The newest failure of a backend's jobs."""

    at: datetime | None
    job_id: str
    code: str | None
    message: str | None


async def last_errors(session: AsyncSession, names: list[str]) -> dict[str, LastError]:
    """Per backend, its newest failed job (an indexed lookup per backend)."""
    found: dict[str, LastError] = {}
    for name in names:
        job = await queries.newest_failure(session, name)
        if job is not None:
            found[name] = LastError(job.finished_at, job.id, job.error_code, job.error_message)
    return found


def masked_database_url(url: str) -> str:
    """The database URL with its password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return MASK


def mask_secrets(value: Any, name: str = "") -> Any:
    """A copy of a settings value with every credential-looking field replaced by a mask."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, name) for v in value]
    # Only text can be a credential: a number named like one (key_cache_seconds) is shown.
    if isinstance(value, str) and value and name not in NOT_SECRET and SECRET_NAME.search(name):
        return MASK
    return value


def effective_configuration(settings: Settings) -> dict[str, Any]:
    """Every setting as in effect, secrets masked, the database URL without its password."""
    values: dict[str, Any] = settings.model_dump(mode="json")
    values["database_url"] = masked_database_url(settings.database_url)
    return {name: mask_secrets(value, name) for name, value in sorted(values.items())}


@router.get("/status")
async def status_page(request: Request, admin: Admin, svc: AppServices) -> Response:
    """What runs and how it is configured."""
    settings, backend_set = svc.settings, svc.backends
    names = sorted(backend_set.backends)
    async with svc.sessions() as session:
        errors = await last_errors(session, names)
    backends = [
        {
            "name": name,
            "type": settings.backends[name].type if name in settings.backends else "?",
            "concurrency": backend_set.concurrency[name],
            "models": sorted(m for m, b in backend_set.models.items() if b == name),
            "last_error": errors.get(name),
        }
        for name in names
    ]
    return page(
        request,
        "status.html",
        admin=admin,
        title="Status",
        active="/admin/status",
        version=__version__,
        database=masked_database_url(settings.database_url),
        dialect="SQLite" if settings.is_sqlite else "PostgreSQL",
        storage_root=svc.storage.describe(),
        on_disk=await svc.storage.usage_bytes(),
        backends=backends,
        default_model=backend_set.default_model,
        retention=duration(settings.retention_days * 86400),
        cleanup_every=duration(settings.cleanup_interval_seconds),
        configuration=effective_configuration(settings),
    )
