"""Domain errors: each carries an HTTP status and a stable code; each surface renders them its own way."""

from __future__ import annotations


class ImagegateError(Exception):
    """Something went wrong."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str | None = None,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or (type(self).__doc__ or "").strip()
        self.param = param
        self.headers = headers or {}
        super().__init__(self.message)


class InvalidRequest(ImagegateError):
    """The request is not valid."""

    status = 400
    code = "invalid_request"


class UnknownModel(InvalidRequest):
    """That model is not available."""

    code = "unknown_model"


class InvalidImage(InvalidRequest):
    """That input is not a readable image."""

    code = "invalid_image"


class PayloadTooLarge(ImagegateError):
    """The request is too large."""

    status = 413
    code = "payload_too_large"


class MissingApiKey(ImagegateError):
    """Missing API key: send 'Authorization: Bearer <key>'."""

    status = 401
    code = "missing_api_key"


class InvalidApiKey(ImagegateError):
    """Invalid API key: it is not one this service issued, or it was deleted."""

    status = 401
    code = "invalid_api_key"


class KeyDisabled(ImagegateError):
    """This API key is disabled; ask the operator to enable it."""

    status = 403
    code = "key_disabled"


class KeyExpired(ImagegateError):
    """This API key has expired; ask the operator for a new one."""

    status = 403
    code = "key_expired"


class Forbidden(ImagegateError):
    """This client may not see that."""

    status = 403
    code = "forbidden"


class NotFound(ImagegateError):
    """Not found."""

    status = 404
    code = "not_found"


class Conflict(ImagegateError):
    """The resource is not in a state that allows this."""

    status = 409
    code = "conflict"


class QueueFull(ImagegateError):
    """The queue is full; retry later."""

    status = 429
    code = "queue_full"


class BackendError(ImagegateError):
    """The image backend failed."""

    status = 502
    code = "backend_error"


class BackendTimeout(BackendError):
    """The image backend did not answer in time."""

    status = 504
    code = "backend_timeout"


class JobInterrupted(ImagegateError):
    """The job was interrupted by a restart of the service."""

    status = 503
    code = "interrupted"


class ServiceUnavailable(ImagegateError):
    """The service cannot take this request right now; retry in a few seconds."""

    status = 503
    code = "unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    """The service cannot reach its database right now; retry in a few seconds."""

    code = "database_unavailable"


class StorageFull(ImagegateError):
    """The image storage is full; nothing was lost, retry once the operator has freed space."""

    status = 507
    code = "storage_full"


class StorageUnavailable(ImagegateError):
    """The image storage cannot be written right now (read-only or failing); retry later."""

    status = 503
    code = "storage_unavailable"


class RecordedError(ImagegateError):
    """An error recorded on a job, rendered again with its original status and code."""

    def __init__(self, *, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Refusal(ImagegateError):
    """The key's limits refuse this request (recorded in the audit log)."""

    status = 403
    code = "refused"


class ModelNotAllowed(Refusal):
    """This key may not use that model."""

    code = "model_not_allowed"


class InsufficientScope(Refusal):
    """This key may not do that."""

    code = "insufficient_scope"


class RateLimited(Refusal):
    """Too many requests for this key; retry after the Retry-After seconds."""

    status = 429
    code = "rate_limit_exceeded"


class QuotaExceeded(Refusal):
    """This key's image quota is used up until it resets."""

    status = 429
    code = "quota_exceeded"


class TooManyConcurrentJobs(Refusal):
    """This key already has as many unfinished jobs as it may; wait for one to finish."""

    status = 429
    code = "concurrency_limit_exceeded"


class IdempotencyKeyReused(ImagegateError):
    """This Idempotency-Key was already used with a different request."""

    status = 422
    code = "idempotency_key_reused"


class IdempotencyInProgress(ImagegateError):
    """A request with this Idempotency-Key is still being accepted; retry in a moment."""

    status = 409
    code = "idempotency_in_progress"


class UpstreamRateLimited(ImagegateError):
    """The image provider is rate limiting us; retry after the Retry-After seconds."""

    status = 429
    code = "rate_limit_exceeded"


class ContentRejected(ImagegateError):
    """The image provider's safety system rejected the request."""

    status = 400
    code = "content_policy_violation"


class UpstreamRejected(ImagegateError):
    """The image provider rejected the request."""

    status = 400
    code = "upstream_invalid_request"


class UpstreamCredentialsRejected(BackendError):
    """The image provider rejected this service's credentials; the operator must fix them."""

    code = "upstream_credentials_rejected"
