"""What the HTTP surfaces share: the job context and absolute links (a failed job's error: jobs/failures.py)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse

from imagegate.jobs.service import JobContext
from imagegate.services import services


def job_context(request: Request) -> JobContext:
    """The app's JobContext."""
    return services(request).jobs


def base_url(request: Request) -> str:
    """Absolute URL prefix for links: the configured public URL, else what the request came in on."""
    configured = services(request).settings.public_base_url
    return configured or str(request.base_url).rstrip("/")


class FastJSONResponse(JSONResponse):
    """JSON rendered by orjson, byte for byte what JSONResponse renders (compact, UTF-8), in a fraction of the time:
    answers carry megabytes of base64, and even a small job's answer is rendered on the event loop."""

    def render(self, content: Any) -> bytes:
        """The compact UTF-8 JSON of content."""
        return orjson.dumps(content)
