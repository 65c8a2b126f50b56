"""The references the benchmarks compare against, served by uvicorn in the same process model as ImageGate."""

from __future__ import annotations

import io
import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response
from PIL import Image
from pydantic import BaseModel, ConfigDict


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (40, 90, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()
FILE = Path(os.environ.get("BENCH_FILE", "/dev/null"))
app = FastAPI()


class Body(BaseModel):
    """The same JSON the native generate endpoint validates."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    model: str | None = None
    size: str = "auto"
    quality: str = "auto"
    count: int = 1
    output_format: str = "png"


@app.post("/generate")
async def generate(body: Body) -> Response:
    """Validate and answer a fixed small PNG."""
    return Response(PNG, media_type="image/png")


@app.get("/file")
async def file() -> FileResponse:
    """A bare Starlette FileResponse of the benchmark's file."""
    return FileResponse(FILE, media_type="image/png")
