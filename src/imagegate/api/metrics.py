"""GET /metrics: Prometheus text, optionally behind a bearer token."""

from __future__ import annotations

import asyncio
import hmac

from fastapi import APIRouter, Request, Response
from sqlalchemy import func, select

from imagegate.errors import InvalidApiKey, MissingApiKey, NotFound
from imagegate.jobs.models import Job, JobImage, JobInput, JobStatus
from imagegate.metrics import CONTENT_TYPE, LiveFigures, Metrics

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Counters, histograms and live gauges for Prometheus."""
    settings = request.app.state.settings
    if not settings.metrics_enabled:
        raise NotFound("Metrics are turned off (IMAGEGATE_METRICS_ENABLED).")
    if settings.metrics_token is not None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise MissingApiKey("Send the metrics token: 'Authorization: Bearer <token>'.")
        if not hmac.compare_digest(token.strip(), settings.metrics_token.get_secret_value()):
            raise InvalidApiKey("Wrong metrics token.")
    live = await _live_figures(request)
    collected: Metrics = request.app.state.metrics
    body = await asyncio.to_thread(collected.render, live)
    return Response(body, media_type=CONTENT_TYPE)


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
