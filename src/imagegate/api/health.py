"""GET /health (liveness, touches nothing) and GET /ready (database and storage reachable)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy import text

from imagegate import __version__

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
async def ready(request: Request) -> JSONResponse:
    """200 when the database and storage answer, else 503 naming what does not."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS), request.app.state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:
        logger.exception("readiness: database check failed")
        checks["database"] = "unreachable"
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            await request.app.state.storage.check()
        checks["storage"] = "ok"
    except Exception:
        logger.exception("readiness: storage check failed")
        checks["storage"] = "unwritable"
    ok = all(value == "ok" for value in checks.values())
    return JSONResponse({"status": "ready" if ok else "not_ready", **checks}, status_code=200 if ok else 503)
