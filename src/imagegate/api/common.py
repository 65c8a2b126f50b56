"""What the HTTP surfaces share: the job context and absolute links (a failed job's error: jobs/failures.py)."""

from __future__ import annotations

from fastapi import Request

from imagegate.jobs.service import JobContext
from imagegate.services import services


def job_context(request: Request) -> JobContext:
    """The app's JobContext."""
    return services(request).jobs


def base_url(request: Request) -> str:
    """Absolute URL prefix for links: the configured public URL, else what the request came in on."""
    configured = services(request).settings.public_base_url
    return configured or str(request.base_url).rstrip("/")
