"""What a provider's error (the SDK's or an HTTP answer) may tell callers: never our credentials, nor its internals."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import orjson

from imagegate.errors import (
    BackendError,
    BackendTimeout,
    ContentRejected,
    ImagegateError,
    UpstreamCredentialsRejected,
    UpstreamRateLimited,
    UpstreamRejected,
)

if TYPE_CHECKING:
    import openai

CONTENT_CODES = ("content_policy_violation", "moderation_blocked")
DEFAULT_RETRY_AFTER = "20"


def translate(error: openai.APIError) -> ImagegateError:
    """An SDK error as what callers may see: never our credentials, never the provider's internals."""
    import openai

    if isinstance(error, openai.APITimeoutError):
        return BackendTimeout("The image provider did not answer in time.")
    if isinstance(error, openai.APIConnectionError):
        return BackendError("The image provider could not be reached.")
    if isinstance(error, openai.APIStatusError):
        retry_after = error.response.headers.get("retry-after")
        return for_status(error.status_code, retry_after, str(error.code or ""), _message(error))
    return BackendError("The image provider answered unexpectedly.")


def status_error(status: int, headers: Mapping[str, str], content: bytes) -> ImagegateError:
    """A provider's HTTP error answer as what callers may see, as translate sees the SDK's error for it."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        body = None
    error = body.get("error", body) if isinstance(body, dict) else None
    fields = error if isinstance(error, dict) else {}
    message = fields.get("message")
    if not isinstance(message, str) or not message:
        message = f"Error code: {status}"
    return for_status(status, headers.get("retry-after"), str(fields.get("code") or ""), message)


def for_status(status: int, retry_after: str | None, code: str, message: str) -> ImagegateError:
    """The error for a provider's HTTP status, its Retry-After, its error code and its message."""
    if status == 429:
        return UpstreamRateLimited(
            "The image provider is rate limiting this service; retry later.",
            headers={"Retry-After": retry_after or DEFAULT_RETRY_AFTER},
        )
    if status in (401, 403):
        return UpstreamCredentialsRejected(
            "The image provider rejected this service's credentials (upstream credentials rejected); tell the operator."
        )
    if status == 400:
        if code in CONTENT_CODES:
            rejected = ContentRejected(message)
            rejected.code = code
            return rejected
        return UpstreamRejected(f"The image provider rejected the request: {message}")
    if status >= 500:
        return BackendError(f"The image provider failed (HTTP {status}); retry later.")
    return BackendError("The image provider answered unexpectedly.")


def _message(error: openai.APIError) -> str:
    body = error.body if isinstance(error.body, dict) else {}
    message = body.get("message") if isinstance(body.get("message"), str) else None
    return message or error.message
