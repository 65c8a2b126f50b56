"""What an OpenAI SDK error may tell ImageGate's callers: never our credentials, never the provider's internals."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    if isinstance(error, openai.RateLimitError):
        retry_after = error.response.headers.get("retry-after") or DEFAULT_RETRY_AFTER
        return UpstreamRateLimited(
            "The image provider is rate limiting this service; retry later.", headers={"Retry-After": retry_after}
        )
    if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
        return UpstreamCredentialsRejected(
            "The image provider rejected this service's credentials (upstream credentials rejected); tell the operator."
        )
    if isinstance(error, openai.BadRequestError):
        code = str(error.code or "")
        if code in CONTENT_CODES:
            rejected = ContentRejected(_message(error))
            rejected.code = code
            return rejected
        return UpstreamRejected(f"The image provider rejected the request: {_message(error)}")
    if isinstance(error, openai.APIStatusError) and error.status_code >= 500:
        return BackendError(f"The image provider failed (HTTP {error.status_code}); retry later.")
    return BackendError("The image provider answered unexpectedly.")


def _message(error: openai.APIError) -> str:
    body = error.body if isinstance(error.body, dict) else {}
    message = body.get("message") if isinstance(body.get("message"), str) else None
    return message or error.message
