"""The OpenAI Images API's shapes: request bodies, error bodies, responses and stream events."""

from __future__ import annotations

import asyncio
import base64
from typing import Any, Literal

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from imagegate.errors import ImagegateError
from imagegate.jobs.models import Job, JobImage
from imagegate.jobs.outputs import RecentOutputs
from imagegate.storage import Storage

ERROR_TYPES = {401: "invalid_request_error", 403: "permission_error", 429: "rate_limit_error"}
EMPTY_USAGE = {
    "input_tokens": 0,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
    "output_tokens": 0,
    "total_tokens": 0,
}
REPORTED_QUALITIES = ("low", "medium", "high")
REPORTED_BACKGROUNDS = ("transparent", "opaque")
# Fields that only travel to backends as parameters (the common ones have their own place in a job).
PASSTHROUGH = (
    "style",
    "background",
    "output_compression",
    "moderation",
    "user",
    "safety_identifier",
    "input_fidelity",
    "partial_images",
)


class ImageOptions(BaseModel):
    """Fields shared by generations, edits and variations, as OpenAI's spec has them."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    n: int = Field(default=1, ge=1, le=10)
    size: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    user: str | None = Field(default=None, max_length=256)


class GenerationsBody(ImageOptions):
    """POST /v1/images/generations."""

    prompt: str
    quality: Literal["auto", "low", "medium", "high", "standard", "hd"] | None = None
    style: Literal["vivid", "natural"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100)
    background: Literal["transparent", "opaque", "auto"] | None = None
    moderation: Literal["low", "auto"] | None = None
    safety_identifier: str | None = Field(default=None, max_length=256)
    stream: bool | None = None
    partial_images: int | None = Field(default=None, ge=0, le=3)


class EditFields(GenerationsBody):
    """POST /v1/images/edits: the scalar fields (the images come as files or data URLs)."""

    input_fidelity: Literal["high", "low"] | None = None


class ImageUrl(BaseModel):
    """{"image_url": "data:image/png;base64,…"} in the JSON form of an edit."""

    model_config = ConfigDict(extra="forbid")

    image_url: str | None = None
    file_id: str | None = None


class EditJsonBody(EditFields):
    """POST /v1/images/edits with a JSON body."""

    images: list[ImageUrl] = Field(min_length=1)
    mask: ImageUrl | None = None


class VariationFields(ImageOptions):
    """POST /v1/images/variations: the scalar fields."""


def render_openai_error(_request: Request, error: ImagegateError) -> JSONResponse:
    """openai_error, as the surface table calls it."""
    return openai_error(error)


def openai_error(error: ImagegateError, extra: dict[str, Any] | None = None) -> JSONResponse:
    """{"error": {"message", "type", "param", "code", **extra}} with OpenAI's status codes."""
    kind = ERROR_TYPES.get(error.status) or ("server_error" if error.status >= 500 else "invalid_request_error")
    if error.code == "quota_exceeded":
        kind = "insufficient_quota"
    fields = {"message": error.message, "type": kind, "param": error.param, "code": error.code, **(extra or {})}
    body = {"error": fields}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def default_response_format(model: str) -> str:
    """DALL-E answered with URLs by default; GPT image models always with base64."""
    return "url" if model.startswith("dall-e") else "b64_json"


async def image_data(
    job: Job, *, response_format: str, base: str, storage: Storage, recent: RecentOutputs | None = None
) -> list[dict[str, Any]]:
    """The data[] entries: our own file URL, or the bytes as base64 (the provider's own text when kept)."""
    revised = (job.result or {}).get("revised_prompt")
    data = []
    for image in job.live_images:
        item: dict[str, Any] = {}
        if response_format == "url":
            item["url"] = f"{base}/generated/{image.name}"
        else:
            item["b64_json"] = await image_b64(image, storage=storage, recent=recent)
        if revised:
            item["revised_prompt"] = revised
        data.append(item)
    return data


async def image_b64(image: JobImage, *, storage: Storage, recent: RecentOutputs | None = None) -> str:
    """A stored image as base64: the text its provider sent when this process still has it, else encoded."""
    kept = recent.take(image.storage_key) if recent is not None else None
    return kept if kept is not None else await encode_b64(await storage.get(image.storage_key))


async def encode_b64(data: bytes) -> str:
    """Base64 text, encoded off the event loop (images are megabytes)."""
    return await asyncio.to_thread(lambda: base64.b64encode(data).decode("ascii"))


def described(job: Job) -> dict[str, Any]:
    """size, quality, output_format, background and usage, as OpenAI reports them."""
    first = job.live_images[0] if job.live_images else None
    out: dict[str, Any] = {
        "size": f"{first.width}x{first.height}" if first else f"{job.width}x{job.height}",
        "output_format": first.format if first else job.output_format,
    }
    if job.quality in REPORTED_QUALITIES:
        out["quality"] = job.quality
    if job.params.get("background") in REPORTED_BACKGROUNDS:
        out["background"] = job.params["background"]
    usage = (job.result or {}).get("usage")
    if usage:
        out["usage"] = usage
    return out


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One Server-Sent Event."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def stream_event(job: Job, kind: str, *, b64: str, index: int | None, created_at: int) -> dict[str, Any]:
    """An image_generation.* / image_edit.* event body."""
    facts = described(job)
    body: dict[str, Any] = {
        "type": kind,
        "b64_json": b64,
        "created_at": created_at,
        "size": facts["size"],
        "quality": facts.get("quality", "auto"),
        "background": facts.get("background", "auto"),
        "output_format": facts["output_format"],
    }
    if index is not None:
        body["partial_image_index"] = index
    else:
        body["usage"] = facts.get("usage", EMPTY_USAGE)
    return body
