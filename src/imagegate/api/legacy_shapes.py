"""openai-image-gen's shapes: its validation table with the exact messages, and its error envelope."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from imagegate.api.errors import HttpError
from imagegate.errors import ImagegateError, InvalidRequest, RecordedError, ServiceUnavailable

DEFAULT_MODEL = "dall-e-3"
# The models openai-image-gen itself knew, with the sizes it allowed for each (in its messages' order).
ORIGINAL_SIZES = {
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
    "dall-e-3": ("1024x1024", "1024x1792", "1792x1024"),
}
QUALITIES = ("standard", "hd")
STYLES = ("vivid", "natural")
MAX_COUNT = 10
NOT_CONFIGURED = "Image generation service not properly configured"
CONFIGURATION_ERROR = "Image generation service configuration error"
# Flask's descriptions of the HTTP errors the original answered itself (its clients may show them).
HTTP_DESCRIPTIONS = {
    404: "The requested URL was not found on the server. If you entered the URL manually please check your "
    "spelling and try again.",
    405: "The method is not allowed for the requested URL.",
    415: "Did not attempt to load JSON data because the request Content-Type was not 'application/json'.",
}
RATE_LIMIT_CODES = frozenset({"rate_limit_exceeded", "quota_exceeded", "concurrency_limit_exceeded", "queue_full"})
CREDENTIAL_CODES = frozenset({"upstream_credentials_rejected"})


class LegacyError(ImagegateError):
    """An error already in openai-image-gen's terms: its status, code and message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers=headers)
        self.status = status
        self.code = code


def validation_error(message: str) -> LegacyError:
    """400 VALIDATION_ERROR with the message."""
    return LegacyError(400, "VALIDATION_ERROR", message)


@dataclass(frozen=True)
class LegacyRequest:
    """A POST /generate body that passed the table."""

    prompt: str
    model: str
    size: str
    quality: str
    style: str | None
    count: int

    def fingerprint(self) -> dict[str, Any]:
        """The request's identity for Idempotency-Key."""
        return self.__dict__.copy()


def parse_json(body: bytes) -> tuple[Any, bool]:
    """The decoded body and whether it was JSON at all."""
    try:
        return json.loads(body), True
    except ValueError:
        return None, False


def requested_model(data: Any) -> str:
    """The model the body names (the default when it names none or no usable one)."""
    model = data.get("model", DEFAULT_MODEL) if isinstance(data, dict) else DEFAULT_MODEL
    return model if isinstance(model, str) else DEFAULT_MODEL


def require_configured(model: str, routed: Collection[str]) -> None:
    """503 when a client asks for one of the original's models and the operator routes it nowhere.

    The original answered so when it had no provider credentials, before it looked at the request.
    """
    if model in ORIGINAL_SIZES and model not in routed:
        raise LegacyError(503, "SERVICE_UNAVAILABLE", NOT_CONFIGURED)


def validate_body(data: Any, routed: Collection[str]) -> LegacyRequest:
    """The table's checks in the table's order; the first failure is a 400 VALIDATION_ERROR with its message.

    Stricter than the original where it crashed or let nonsense through: every type is checked.
    """
    if not isinstance(data, dict) or not data:
        raise validation_error("Request body is required")
    if "prompt" not in data:
        raise validation_error("Missing required field: prompt")
    prompt = data["prompt"]
    if not isinstance(prompt, str):
        raise validation_error("Prompt must be a string")
    if not prompt.strip():
        raise validation_error("Prompt cannot be empty")
    model = data.get("model", DEFAULT_MODEL)
    if not isinstance(model, str) or model not in routed:
        raise validation_error(f"Invalid model. Supported models: {', '.join(sorted(routed))}")
    size = data.get("size", "1024x1024")
    allowed = ORIGINAL_SIZES.get(model)
    if not isinstance(size, str) or (allowed is not None and size not in allowed):
        listed = ", ".join(allowed) if allowed else "WIDTHxHEIGHT"
        raise validation_error(f"Invalid size for {model}. Supported sizes: {listed}")
    quality = data.get("quality", "standard")
    if quality not in QUALITIES:
        raise validation_error("Invalid quality. Supported: standard, hd")
    style = data.get("style")
    if style is not None and style not in STYLES:
        raise validation_error("Invalid style. Supported: vivid, natural")
    count = data.get("count", 1)
    if type(count) is not int or not 1 <= count <= MAX_COUNT:  # bool is an int subclass: refuse it too
        raise validation_error(f"Count must be an integer between 1 and {MAX_COUNT}")
    return LegacyRequest(prompt, model, size, str(quality), style if isinstance(style, str) else None, count)


def render_legacy_error(_request: Request, error: ImagegateError) -> JSONResponse:
    """legacy_error, as the surface table calls it."""
    return legacy_error(error)


def legacy_error(error: ImagegateError) -> JSONResponse:
    """{"error": message, "status": "failed", "code": CODE} with the original's status codes."""
    translated = translate(error)
    body = {"error": translated.message, "status": "failed", "code": translated.code}
    return JSONResponse(body, status_code=translated.status, headers=translated.headers)


def translate(error: ImagegateError) -> LegacyError:
    """Any error of ours in the original's terms (never a provider's text for credential failures)."""
    if isinstance(error, LegacyError):
        return error
    if isinstance(error, HttpError):
        message = HTTP_DESCRIPTIONS.get(error.status, error.message)
        return LegacyError(error.status, "HTTP_ERROR", message, error.headers)
    if error.code in RATE_LIMIT_CODES:
        return LegacyError(429, "RATE_LIMIT_EXCEEDED", error.message, error.headers)
    if error.code in CREDENTIAL_CODES:
        return LegacyError(500, "SERVICE_ERROR", CONFIGURATION_ERROR)
    if isinstance(error, RecordedError):  # a job that failed while generating
        return LegacyError(400, "GENERATION_ERROR", error.message, error.headers)
    if isinstance(error, InvalidRequest):
        return LegacyError(400, "VALIDATION_ERROR", error.message, error.headers)
    if isinstance(error, ServiceUnavailable):
        return LegacyError(503, "SERVICE_UNAVAILABLE", error.message, error.headers)
    if error.status >= 500:
        return LegacyError(500, "INTERNAL_ERROR", "Internal server error")
    return LegacyError(error.status, error.code.upper(), error.message, error.headers)
