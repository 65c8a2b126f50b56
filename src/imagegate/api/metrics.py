"""GET /metrics: Prometheus text for allowed addresses (loopback by default) or a bearer token."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress

from fastapi import APIRouter, Request, Response
from sqlalchemy import func, select

from imagegate.errors import Forbidden, InvalidApiKey, MissingApiKey, NotFound
from imagegate.jobs.models import Job, JobImage, JobInput, JobStatus
from imagegate.metrics import CONTENT_TYPE, LiveFigures, Metrics
from imagegate.settings import Settings

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Counters, histograms and live gauges for Prometheus."""
    settings = request.app.state.settings
    if not settings.metrics_enabled:
        raise NotFound("Metrics are turned off (IMAGEGATE_METRICS_ENABLED).")
    _require_scraper(request, settings)
    live = await _live_figures(request)
    collected: Metrics = request.app.state.metrics
    body = await asyncio.to_thread(collected.render, live)
    return Response(body, media_type=CONTENT_TYPE)


def _require_scraper(request: Request, settings: Settings) -> None:
    """With a metrics token, that token; without one, a client on the allow-list (loopback by default)."""
    if settings.metrics_token is not None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise MissingApiKey("Send the metrics token: 'Authorization: Bearer <token>'.")
        if not hmac.compare_digest(token.strip(), settings.metrics_token.get_secret_value()):
            raise InvalidApiKey("Wrong metrics token.")
        return
    if not _allowed(request.client.host if request.client else "", settings):
        raise Forbidden(
            "Metrics are served to the addresses in IMAGEGATE_METRICS_ALLOW_IPS, or with IMAGEGATE_METRICS_TOKEN; "
            "ask the operator to set one."
        )


def _allowed(host: str, settings: Settings) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in settings.metrics_networks())


async def _live_figures(request: Request) -> LiveFigures:
    queued: dict[str, int] = {}
    running: dict[str, int] = {}
    async with request.app.state.sessions() as session:
        rows = await session.execute(
            select(Job.backend, Job.status, func.count())
            .where(Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
            .group_by(Job.backend, Job.status)
        )
        for backend, status, count in rows.all():
            (queued if status == JobStatus.QUEUED else running)[backend] = count
        stored = int(await session.scalar(select(func.coalesce(func.sum(JobImage.bytes), 0))) or 0)
        stored += int(await session.scalar(select(func.coalesce(func.sum(JobInput.bytes), 0))) or 0)
    for backend in request.app.state.jobs.backends.backends:
        queued.setdefault(backend, 0)
        running.setdefault(backend, 0)
    return LiveFigures(queued, running, stored)
