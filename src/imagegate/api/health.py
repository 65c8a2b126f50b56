"""GET /health (liveness, touches nothing) and GET /ready (database and storage reachable, no backend wedged)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy import text

from imagegate import __version__
from imagegate.jobs.scheduler import Scheduler
from imagegate.services import AppServices

router = APIRouter(tags=["health"])
logger = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 5.0


@router.get("/", include_in_schema=False)
async def root(request: Request) -> RedirectResponse:
    """The bare address leads a person to the admin UI."""
    root_path: str = request.scope.get("root_path", "")
    return RedirectResponse(f"{root_path.rstrip('/')}/admin", status_code=307)


@router.get("/health")
async def health() -> dict[str, Any]:
    """The process is up and its event loop answers."""
    return {"status": "ok", "version": __version__}


@router.get("/ready", response_model=None)
async def ready(svc: AppServices) -> JSONResponse:
    """200 when the database and storage answer and no backend is wedged, else 503 naming what is wrong."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS), svc.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:
        logger.exception("readiness: database check failed")
        checks["database"] = "unreachable"
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            await svc.storage.check()
        checks["storage"] = "ok"
    except Exception:
        logger.exception("readiness: storage check failed")
        checks["storage"] = "unwritable"
    details: dict[str, Any] = {}
    scheduler = svc.scheduler
    if scheduler is not None and checks["database"] == "ok":
        wedged = await _wedged(scheduler)
        checks["backends"] = "wedged" if wedged else "ok"
        if wedged:
            details["wedged_backends"] = wedged
    ok = all(value == "ok" for value in checks.values())
    body = {"status": "ready" if ok else "not_ready", **checks, **details}
    return JSONResponse(body, status_code=200 if ok else 503)


async def _wedged(scheduler: Scheduler) -> dict[str, str]:
    """Backends whose slots this process holds with jobs that cannot end (their result unrecorded, or lost)."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            return await scheduler.wedged_backends()
    except Exception:
        logger.exception("readiness: backend check failed")
        return {"*": "could not be checked"}
