"""POST /v1/vision: ask a model about images (codex-image-service's read side), in the native shape."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from imagegate.api.common import job_context
from imagegate.jobs import vision
from imagegate.keys.auth import CallerKey

router = APIRouter(prefix="/v1", tags=["native"])


class VisionBody(BaseModel):
    """The body of POST /v1/vision; unknown fields are ignored, as on the rest of the native API."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(description="What to ask about the images.")
    images_base64: list[str] = Field(description="1 to IMAGEGATE_MAX_REFERENCE_IMAGES images, base64 or data: URLs.")
    model: str | None = Field(default=None, description="A routed model whose backend can read images.")


@router.post("/vision")
async def describe(body: VisionBody, request: Request, key: CallerKey) -> dict[str, Any]:
    """The model's final answer about the images (never an empty one: that is a 502)."""
    answer = await vision.describe(
        ctx=job_context(request), key=key, prompt=body.prompt, images=body.images_base64, model=body.model
    )
    return {"id": answer.id, "object": "vision.result", "model": answer.model, "text": answer.text}
