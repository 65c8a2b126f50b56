"""An instant fake OpenAI Images upstream for benchmark 7: every answer is prepared once, at start.

A prompt containing 'large' gets a 1024x1024 noise PNG (about 3 MB, as gpt-image-1's real answers are);
any other prompt a 64x64 PNG. The body is read, as a real upstream would, and otherwise ignored.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

USAGE = {
    "input_tokens": 10,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 10},
    "output_tokens": 100,
    "total_tokens": 110,
}


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def small_png() -> bytes:
    """A 64x64 PNG of one colour."""
    return _png(Image.new("RGB", (64, 64), (40, 90, 200)))


def noise_png(side: int = 1024) -> bytes:
    """A side x side PNG of random pixels (noise does not compress: about 3 MB at 1024)."""
    return _png(Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)))


def answer(png: bytes) -> bytes:
    """The JSON an Images API generation answers with, for one image."""
    return json.dumps(
        {"created": int(time.time()), "data": [{"b64_json": base64.b64encode(png).decode()}], "usage": USAGE}
    ).encode()


SMALL = answer(small_png())
LARGE = answer(noise_png(int(os.environ.get("BENCH_LARGE_SIDE", "1024"))))


async def generations(request: Request) -> Response:
    """Answer at once with the prepared image."""
    body = await request.body()
    return Response(LARGE if b"large" in body else SMALL, media_type="application/json")


app = Starlette(routes=[Route("/v1/images/generations", generations, methods=["POST"])])
