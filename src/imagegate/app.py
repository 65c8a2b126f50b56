"""create_app(settings): the FastAPI app and its lifespan (engine, storage, backends, scheduler)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.routing import Route

from imagegate import __version__
from imagegate.admin import export as admin_export
from imagegate.admin import keys_pages as admin_keys_pages
from imagegate.admin import panels as admin_panels
from imagegate.admin import router as admin_router
from imagegate.admin import service as admin_service
from imagegate.admin import status as admin_status
from imagegate.admin.password import ensure_admin_password
from imagegate.admin.web import AdminHeadersMiddleware, LoginRequired, error_page, identify_admin, prefix
from imagegate.api import docs as api_docs
from imagegate.api import errors, files, health, legacy, native, openai, usage, vision
from imagegate.api import metrics as metrics_api
from imagegate.api import openapi as api_openapi
from imagegate.api.headers import request_base
from imagegate.api.legacy_listener import check_anonymous_key
from imagegate.api.legacy_shapes import render_legacy_error
from imagegate.api.limits import InputGuardMiddleware
from imagegate.api.observe import RequestMiddleware
from imagegate.api.openai_shapes import render_openai_error
from imagegate.backends.registry import BackendSet
from imagegate.db import create_engine, session_factory
from imagegate.jobs.events import JobEvents
from imagegate.jobs.notify import Listener
from imagegate.jobs.scheduler import Scheduler
from imagegate.jobs.service import JobContext
from imagegate.jobs.watch import JobWatch
from imagegate.keys.cache import KeyCache
from imagegate.mcp_server.endpoint import ENDPOINT as MCP_ENDPOINT
from imagegate.mcp_server.endpoint import McpEndpoint
from imagegate.metrics import Metrics
from imagegate.migrations import upgrade_async
from imagegate.retention import run_periodically
from imagegate.services import Services, find_services
from imagegate.settings import Settings
from imagegate.storage import storage_for

logger = logging.getLogger(__name__)


def create_app(settings: Settings, *, metrics: Metrics | None = None) -> FastAPI:
    """Build the app; nothing is opened until its lifespan starts (metrics: to share with a second listener)."""
    metrics = metrics or Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running(app, settings, metrics=metrics) as opened:
            try:
                await check_anonymous_key(sessions=opened.sessions, settings=settings)
                yield
            finally:
                await mcp.aclose()  # its sessions call this app back: closed before the app's services

    docs = settings.api_docs_enabled
    app = FastAPI(
        title="ImageGate",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # api.docs serves /docs from the package's own files
        redoc_url=None,
        openapi_url=api_docs.OPENAPI_URL if docs else None,
    )
    if docs:
        api_docs.install(app)
        api_openapi.install(app, settings)
    surfaces = errors.SurfaceErrors()
    app.add_middleware(
        InputGuardMiddleware,
        max_bytes=settings.max_body_bytes,
        surfaces=surfaces,
        seconds=settings.http_body_timeout_seconds,
    )
    app.add_middleware(AdminHeadersMiddleware)
    app.add_middleware(RequestMiddleware, metrics=metrics, base=request_base(settings))
    errors.install(app, surfaces)
    for path in openai.PREFIXES:
        surfaces.register(path, render_openai_error)
    surfaces.register("/admin", error_page)
    surfaces.identify_with("/admin", identify_admin)
    for path in legacy.PREFIXES:
        surfaces.register(path, render_legacy_error)
    surfaces.register("/generated/", lambda _request, error: errors.native_error(error))  # not "/generate"
    app.add_exception_handler(LoginRequired, _to_login)
    app.include_router(health.router)
    app.include_router(metrics_api.router)
    app.include_router(native.router)
    app.include_router(vision.router)
    app.include_router(usage.router)
    app.include_router(openai.router)
    app.include_router(files.router)
    app.include_router(legacy.router)
    app.mount("/admin/static", admin_router.static, name="admin-static")
    app.include_router(admin_router.router)
    app.include_router(admin_keys_pages.router)
    mcp = McpEndpoint(app, settings)
    app.router.routes.append(Route(MCP_ENDPOINT, mcp, methods=["GET", "POST", "DELETE"]))
    app.include_router(admin_panels.router)
    app.include_router(admin_status.router)
    app.include_router(admin_export.router)
    return app


@contextlib.asynccontextmanager
async def running(app: FastAPI, settings: Settings, *, metrics: Metrics | None = None) -> AsyncIterator[Services]:
    """Open everything the app needs and put it on app.state.services; close it all in reverse order."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.auto_migrate:
        await upgrade_async(settings.database_url, settings.prices)
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    backends = BackendSet.from_settings(settings)
    metrics = metrics or Metrics()
    ctx = job_context(settings, sessions, backends, metrics)
    if settings.admin_password is not None:
        await admin_service.adopt_configured_password(
            sessions=sessions, password=settings.admin_password.get_secret_value()
        )
    elif (password := await ensure_admin_password(sessions=sessions, settings=settings)) is not None:
        announce_admin_password(password, admin_url(settings))
    await backends.start(sessions)
    scheduler = Scheduler(ctx) if settings.run_scheduler else None
    listener = Listener.for_url(settings.database_url, ctx.events, backends.backends)
    opened = Services(
        settings=settings,
        metrics=metrics,
        engine=engine,
        jobs=ctx,
        scheduler=scheduler,
        panels=backends.admin_panels(),
        key_cache=KeyCache(settings.key_cache_seconds),
        listener=listener,
    )
    app.state.services = opened
    sweeper, stop_sweeping = None, asyncio.Event()
    try:
        if ctx.watch is not None:
            ctx.watch.start()
        if listener is not None:
            listener.start()
        if scheduler is not None:
            await scheduler.start()
            sweeper = asyncio.create_task(
                run_periodically(
                    sessions=sessions, storage=ctx.storage, settings=settings, backends=backends, stop=stop_sweeping
                ),
                name="retention",
            )
        yield opened
    finally:
        if sweeper is not None:
            stop_sweeping.set()
            await asyncio.gather(sweeper, return_exceptions=True)
        if scheduler is not None:
            await scheduler.stop()
        if listener is not None:
            await listener.stop()
        if ctx.watch is not None:
            await ctx.watch.stop()
        await backends.aclose()
        await engine.dispose()


def job_context(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], backends: BackendSet, metrics: Metrics
) -> JobContext:
    """What the job verbs need, with one watch over the jobs this process's requests wait on."""
    events = JobEvents()
    return JobContext(
        metrics=metrics,
        sessions=sessions,
        storage=storage_for(settings),
        backends=backends,
        settings=settings,
        events=events,
        watch=JobWatch(sessions, events, settings.poll_interval_seconds),
    )


def begin_shutdown(app: FastAPI) -> None:
    """The server is about to stop: waiting requests answer now, running jobs' grace period starts.

    Called before the server waits for its open requests, so that wait ends as soon as they have answered
    (each surface's "still running" answer) instead of timing out, and shutdown takes one grace period, not two.
    """
    opened = find_services(app)
    if opened is None:
        return
    logger.info("shutting down: waiting requests answer with their jobs as they stand")
    opened.jobs.events.drain()
    if opened.scheduler is not None:
        opened.scheduler.begin_stop()


async def _to_login(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    return RedirectResponse(f"{prefix(request)}/admin/login?next={quote(exc.next_path)}", status_code=303)


def admin_url(settings: Settings) -> str:
    """Where a person opens the admin UI: the public URL when one is set, else the address served."""
    base = settings.public_base_url or f"http://{settings.host}:{settings.port}{settings.root_path}"
    return f"{base.rstrip('/')}/admin"


def announce_admin_password(password: str, url: str) -> None:
    """Say the generated admin password once, where to use it and how to change it; only its hash is stored."""
    banner = "=" * 72
    print(
        f"\n{banner}\nImageGate generated an admin password (shown only this once; only its hash is kept):\n"
        f"\n    {password}\n\nLog in with it at {url}\n"
        "Change it with `imagegate admin set-password`, or set IMAGEGATE_ADMIN_PASSWORD (or _FILE).\n"
        f"{banner}\n",
        flush=True,
    )
