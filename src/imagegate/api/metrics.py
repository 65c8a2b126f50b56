"""GET /metrics: Prometheus text for allowed addresses (loopback by default) or a bearer token."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress

from fastapi import APIRouter, Request, Response

from imagegate.errors import Forbidden, InvalidApiKey, MissingApiKey, NotFound
from imagegate.jobs import queries
from imagegate.jobs.models import JobStatus
from imagegate.metrics import CONTENT_TYPE, LiveFigures
from imagegate.services import AppServices, Services
from imagegate.settings import Settings

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, svc: AppServices) -> Response:
    """Counters, histograms and live gauges for Prometheus."""
    settings = svc.settings
    if not settings.metrics_enabled:
        raise NotFound("Metrics are turned off (IMAGEGATE_METRICS_ENABLED).")
    _require_scraper(request, settings)
    live = await _live_figures(svc)
    body = await asyncio.to_thread(svc.metrics.render, live)
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


async def _live_figures(svc: Services) -> LiveFigures:
    async with svc.sessions() as session:
        active = await queries.active_by_backend(session)
        stored = await queries.stored_bytes(session)
    queued = {backend: counts[JobStatus.QUEUED] for backend, counts in active.items() if JobStatus.QUEUED in counts}
    running = {backend: counts[JobStatus.RUNNING] for backend, counts in active.items() if JobStatus.RUNNING in counts}
    for backend in svc.backends.backends:
        queued.setdefault(backend, 0)
        running.setdefault(backend, 0)
    return LiveFigures(queued, running, stored)
