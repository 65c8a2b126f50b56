"""The second listener (IMAGEGATE_OIG_LISTEN): only the openai-image-gen API, at its root, in the same process.

It shares the main app's state (database, storage, backends, scheduler, metrics) and lifespan: one process,
one queue. Connections are told apart by the local port they arrived on.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from imagegate.api import errors, legacy
from imagegate.api.headers import main_listener_base
from imagegate.api.legacy_shapes import DEFAULT_MODEL, render_legacy_error
from imagegate.api.limits import InputGuardMiddleware
from imagegate.api.observe import RequestMiddleware
from imagegate.errors import ImagegateError, InvalidApiKey
from imagegate.keys import service as keys_service
from imagegate.metrics import Metrics
from imagegate.services import AppServices
from imagegate.settings import Settings

logger = logging.getLogger(__name__)
ANONYMOUS_SETTING = "IMAGEGATE_OIG_ANONYMOUS_KEY"


def create_oig_app(main: FastAPI, *, settings: Settings, metrics: Metrics) -> FastAPI:
    """The app of the second listener: /health in the original's shape, /generate and /images/<id>.

    It is given the main app's settings and metrics; its requests find the services the main app's lifespan opens.
    """
    app = FastAPI(title="ImageGate (openai-image-gen API)", openapi_url=None, docs_url=None, redoc_url=None)
    app.state = main.state  # one lifespan opens everything, for both listeners
    surfaces = errors.SurfaceErrors()
    surfaces.register("/", render_legacy_error)
    app.add_middleware(InputGuardMiddleware, max_bytes=settings.max_body_bytes, surfaces=surfaces)
    app.add_middleware(RequestMiddleware, metrics=metrics, base=main_listener_base(settings))
    errors.install(app, surfaces)
    app.add_api_route("/health", health, methods=["GET"])
    app.include_router(legacy.router)
    return app


async def health(svc: AppServices) -> dict[str, Any]:
    """The original's /health: api_key_configured says whether its default model is routed to a backend."""
    configured = DEFAULT_MODEL in svc.settings.models
    timestamp = datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
    return {"status": "healthy", "api_key_configured": configured, "timestamp": timestamp}


class ListenerDispatch:
    """One ASGI app for both listeners: requests that came in on the second listener's port go to its app."""

    def __init__(self, main: ASGIApp, oig: ASGIApp, oig_port: int) -> None:
        self.main = main
        self.oig = oig
        self.oig_port = oig_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if scope["type"] in ("http", "websocket") and server is not None and server[1] == self.oig_port:
            await self.oig(_at_root(scope), receive, send)
            return
        await self.main(scope, receive, send)


def _at_root(scope: Scope) -> Scope:
    """The scope without the main listener's root path: the second listener serves at its root."""
    root = scope.get("root_path", "")
    if not root:
        return scope
    path: str = scope["path"]
    raw: bytes = scope.get("raw_path") or path.encode()
    return {
        **scope,
        "root_path": "",
        "path": path.removeprefix(root) or "/",
        "raw_path": raw.removeprefix(root.encode()) or b"/",
    }


async def check_anonymous_key(*, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    """Refuse to start when IMAGEGATE_OIG_ANONYMOUS_KEY names no usable key (a typo must not open 401s to all)."""
    handle = settings.oig_anonymous_key
    if handle is None:
        return
    try:
        async with sessions() as session, session.begin():
            await keys_service.verify_handle(session=session, handle=handle)
    except InvalidApiKey:
        message = (
            f"{ANONYMOUS_SETTING}={handle}: no key has that handle. Create one with `imagegate keys create NAME` "
            "and give its handle (key_…), or unset the setting."
        )
    except ImagegateError as error:
        message = f"{ANONYMOUS_SETTING}={handle}: {error.message} Fix that key, or unset the setting."
    else:
        return
    logger.error(message)
    raise RuntimeError(message)
