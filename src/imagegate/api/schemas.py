"""What each surface answers, as pydantic models: they describe the API in /openapi.json and are never run.

The routers build their answers as dicts (each surface has its own shapes, some kept byte for byte from the
services ImageGate replaces); these models say the same thing to a reader of the schema, and
tests/api/test_openapi.py checks real answers against them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled", "expired"]


class NativeErrorDetail(BaseModel):
    """The error object of the native shape."""

    code: str = Field(description="Machine-readable: invalid_request, unauthorized, rate_limit_exceeded, …")
    message: str = Field(description="What went wrong and what to change.")
    param: str | None = Field(description="The field at fault, when there is one.")


class NativeError(BaseModel):
    """An error on the native API (and /generated/, /health, /metrics)."""

    error: NativeErrorDetail
    detail: str = Field(description="The message again, in FastAPI's shape (codex-image-service's clients read it).")


class JobImageOut(BaseModel):
    """One output image of a job."""

    url: str = Field(description="Where to download it (GET, no key needed; the name is unguessable).")
    name: str
    width: int
    height: int
    format: str
    bytes: int
    sha256: str
    expires_at: datetime | None


class NativeJob(BaseModel):
    """A job as the native API shows it."""

    id: str = Field(description="img_<random>")
    object: Literal["image.job"]
    status: JobStatusName
    model: str
    backend: str
    prompt: str
    size: str
    width: int | None
    height: int | None
    quality: str
    output_format: str
    count: int
    image_count: int
    reference_image_count: int
    cancel_requested: bool
    request_id: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None
    images: list[JobImageOut]
    error: str | None = Field(description="Why the job failed or was cancelled, or null.")
    error_code: str | None = Field(description="backend_error, backend_timeout, cancelled, interrupted, … or null.")
    status_url: str = Field(description="GET it to poll the job.")


class NativeFailedJob(NativeJob):
    """A job that failed while the request waited: the job, with its error's status."""

    detail: str = Field(description="The error again, in FastAPI's shape.")


class WebhookAttempt(BaseModel):
    """One try at delivering a webhook."""

    at: datetime
    status_code: int | None = Field(description="The receiver's answer; null when it could not be reached.")
    latency_ms: int | None
    error: str | None


class WebhookDelivery(BaseModel):
    """One signed webhook of the job, and its tries."""

    id: str
    event: str
    url: str
    status: str = Field(description="pending, delivered or failed.")
    attempt_count: int
    created_at: datetime
    next_attempt_at: datetime | None
    attempts: list[WebhookAttempt]


class NativeJobWithWebhooks(NativeJob):
    """One job, with its webhook deliveries."""

    webhooks: list[WebhookDelivery]


class NativeJobList(BaseModel):
    """A page of the caller's jobs, newest first."""

    object: Literal["list"]
    data: list[NativeJob]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last.")


class NativeJobDeleted(BaseModel):
    """A deleted job."""

    id: str
    object: Literal["image.job"]
    deleted: Literal[True]


class NativeModel(BaseModel):
    """A model the key may use, as the native API describes it."""

    id: str
    backend: str
    default: bool
    sizes: list[str] | None = Field(description="The sizes it makes; null: any WIDTHxHEIGHT up to max_side.")
    max_side: int
    can_describe: bool = Field(description="Whether POST /v1/vision can use it.")


class NativeModelList(BaseModel):
    """The models this key may use."""

    object: Literal["list"]
    data: list[NativeModel]


class VisionResult(BaseModel):
    """The model's answer about the images."""

    id: str
    object: Literal["vision.result"]
    model: str
    text: str


class UsagePeriod(BaseModel):
    """Images in a period against the key's quota."""

    images: int
    limit: int | None
    remaining: int | None
    resets_at: datetime


class UsageKey(BaseModel):
    """The calling key."""

    handle: str
    name: str
    expires_at: datetime | None


class UsageRate(BaseModel):
    """Requests in the last minute against the key's rate limit."""

    limit: int | None
    used: int
    remaining: int | None


class UsageConcurrency(BaseModel):
    """Unfinished jobs against the key's limit."""

    active: int
    limit: int | None


class UsageSpend(BaseModel):
    """This month's estimated spend against the key's monthly budget."""

    estimated_usd: float | None = Field(
        description="Dollars, priced from the token usage backends report (the OpenAI backend) and the price "
        "table; null when no job of this month could be priced. An estimate, not a bill."
    )
    budget_usd: float | None = Field(description="The key's monthly budget; null: none.")
    remaining_usd: float | None = Field(description="What is left of the budget; null: no budget.")
    resets_at: datetime


class Usage(BaseModel):
    """The calling key's usage, limits and what is left."""

    object: Literal["usage"]
    key: UsageKey
    today: UsagePeriod
    month: UsagePeriod
    requests_per_minute: UsageRate
    concurrent_jobs: UsageConcurrency
    spend: UsageSpend
    allowed_models: list[str] | None = Field(description="null: every routed model.")
    scopes: list[str]


class Health(BaseModel):
    """The process is up."""

    status: Literal["ok"]
    version: str


class Readiness(BaseModel):
    """What /ready checked: each part "ok" or what is wrong with it."""

    status: Literal["ready", "not_ready"]
    database: str
    storage: str
    backends: str | None = Field(default=None, description="Checked where this process runs jobs.")
    wedged_backends: dict[str, str] | None = None


class OpenAIErrorDetail(BaseModel):
    """The error object of OpenAI's shape."""

    message: str
    type: str = Field(description="invalid_request_error, permission_error, rate_limit_error, server_error, …")
    param: str | None
    code: str | None
    job_id: str | None = Field(default=None, description="When a job was made: fetch it instead of retrying.")


class OpenAIError(BaseModel):
    """An error on the OpenAI-compatible surface, as OpenAI's API answers them."""

    error: OpenAIErrorDetail


class OpenAIImage(BaseModel):
    """One entry of data[]: a URL or the bytes, as response_format asked."""

    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    """OpenAI's ImagesResponse, with the job that made it."""

    created: int
    data: list[OpenAIImage]
    size: str | None = None
    quality: str | None = None
    output_format: str | None = None
    background: str | None = None
    usage: dict[str, Any] | None = Field(default=None, description="Token usage, where the backend reports it.")
    job_id: str


class OpenAIModel(BaseModel):
    """A model the key may use."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str = Field(description="imagegate:<backend>")


class OpenAIModelList(BaseModel):
    """The models the key may use."""

    object: Literal["list"]
    data: list[OpenAIModel]


class LegacyGenerateBody(BaseModel):
    """The body of POST /generate, as openai-image-gen took it."""

    prompt: str
    model: str = Field(default="dall-e-3", description="A routed model (dall-e-2, dall-e-3 or another).")
    size: str = Field(default="1024x1024")
    quality: Literal["standard", "hd"] = "standard"
    style: Literal["vivid", "natural"] | None = None
    count: int = Field(default=1, ge=1, le=10)


class LegacyImage(BaseModel):
    """One image of a completed openai-image-gen answer."""

    id: str
    url: str = Field(description="/images/<id>, relative, as the original gave it.")
    prompt: str
    model: str
    size: str


class LegacyCompleted(BaseModel):
    """The images are saved."""

    job_id: str
    status: Literal["completed"]
    images: list[LegacyImage]


class LegacyPending(BaseModel):
    """The wait ran out; the job goes on (repeat with the same Idempotency-Key to collect it)."""

    job_id: str
    status: Literal["pending"]
    images: list[LegacyImage]
    message: str


class LegacyDeleted(BaseModel):
    """An image was deleted."""

    status: Literal["success"]
    message: str


class LegacyError(BaseModel):
    """An error on the openai-image-gen surface, in that project's envelope."""

    error: str
    status: Literal["failed"]
    code: str = Field(description="VALIDATION_ERROR, GENERATION_ERROR, RATE_LIMIT_EXCEEDED, IMAGE_NOT_FOUND, …")


DOCUMENTED: tuple[type[BaseModel], ...] = (
    NativeError,
    NativeJob,
    NativeFailedJob,
    NativeJobWithWebhooks,
    NativeJobList,
    NativeJobDeleted,
    NativeModelList,
    VisionResult,
    Usage,
    Health,
    Readiness,
    OpenAIError,
    ImagesResponse,
    OpenAIModel,
    OpenAIModelList,
    LegacyGenerateBody,
    LegacyCompleted,
    LegacyPending,
    LegacyDeleted,
    LegacyError,
)
