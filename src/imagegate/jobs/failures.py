"""The error a finished job that did not succeed answers with: one builder, rendered by each surface in its shape."""

from __future__ import annotations

from imagegate.errors import RecordedError
from imagegate.jobs.models import Job

UNRECORDED_MESSAGE = "The image could not be generated."


def job_error(job: Job, *, unrecorded: str = UNRECORDED_MESSAGE) -> RecordedError:
    """The job's recorded status, code, message and Retry-After; `unrecorded` is the message when none was kept."""
    error = RecordedError(
        status=job.error_status or 500,
        code=job.error_code or "job_failed",
        message=job.error_message or unrecorded,
    )
    if job.error_retry_after:
        error.headers = {"Retry-After": job.error_retry_after}
    return error
