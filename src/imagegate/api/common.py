"""What the HTTP surfaces share: the job context and absolute links (a failed job's error: jobs/failures.py)."""

from __future__ import annotations

from fastapi import Request

from imagegate.jobs.service import JobContext


def job_context(request: Request) -> JobContext:
    """The app's JobContext."""
    ctx: JobContext = request.app.state.jobs
    return ctx


def base_url(request: Request) -> str:
    """Absolute URL prefix for links: the configured public URL, else what the request came in on."""
    configured: str | None = request.app.state.settings.public_base_url
    return configured or str(request.base_url).rstrip("/")
