"""The error of a failed job, built once for every surface."""

from __future__ import annotations

from typing import Any

from imagegate.jobs.failures import UNRECORDED_MESSAGE, job_error
from imagegate.jobs.models import Job, JobStatus


def _job(**values: Any) -> Job:
    values.setdefault("status", JobStatus.FAILED)
    return Job(id="img_test", params=values.pop("params", {}), **values)


def test_the_recorded_status_code_and_message_are_the_error() -> None:
    error = job_error(_job(error_status=429, error_code="rate_limit_exceeded", error_message="Slow down."))
    assert (error.status, error.code, error.message, error.headers) == (429, "rate_limit_exceeded", "Slow down.", {})


def test_a_recorded_retry_after_becomes_the_header() -> None:
    job = _job(error_status=429, error_code="rate_limit_exceeded", error_message="x", error_retry_after="30")
    assert job_error(job).headers == {"Retry-After": "30"}


def test_a_job_without_a_recorded_error_is_a_500_with_the_surfaces_fallback_message() -> None:
    unrecorded = _job(status=JobStatus.CANCELLED)
    error = job_error(unrecorded)
    assert (error.status, error.code, error.message) == (500, "job_failed", UNRECORDED_MESSAGE)
    assert job_error(unrecorded, unrecorded="The job did not finish.").message == "The job did not finish."
