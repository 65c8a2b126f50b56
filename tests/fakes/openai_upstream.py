"""A fake OpenAI Images API on loopback, speaking the real protocol, scripted by words in the prompt.

'rate-limited' → 429 with retry-after; 'policy' → 400 moderation_blocked; 'bad-credentials' → 401 (its message
echoes a key fragment, as OpenAI's does); 'upstream-down' → 500; 'slow' → answers after 5 s; 'as-url' → a URL
to the image instead of base64; 'huge-url' → a URL to 2 MB of bytes; 'flaky' → the first request of each prompt
is a 500 asking for a retry after 1 ms ('flaky final' adds x-should-retry: false). Azure's deployment URLs
answer as /v1 does. Chat Completions (vision) follow the
same words, and 'no-answer' gives an empty message. Every request is recorded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.backends import tiny_png
from tests.fakes.postgres import free_port

LEAKY_MESSAGE = "Incorrect API key provided: sk-test-s*****cret."


@dataclass
class Recorded:
    """One request the fake received."""

    path: str
    fields: dict[str, Any]
    files: dict[str, list[bytes]] = field(default_factory=dict)
    authorization: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)


class FakeOpenAI:
    """The fake upstream's state: recorded requests and served files."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.files: dict[str, bytes] = {}
        self.tried: set[str] = set()
        self.url = ""

    def app(self) -> Starlette:
        """The ASGI app."""
        return Starlette(
            routes=[
                Route("/v1/images/generations", self._images, methods=["POST"]),
                Route("/v1/images/edits", self._images, methods=["POST"]),
                Route("/v1/images/variations", self._images, methods=["POST"]),
                Route("/openai/deployments/{deployment}/images/generations", self._images, methods=["POST"]),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/files/{name}", self._file, methods=["GET"]),
            ]
        )

    async def _read(self, request: Request) -> Recorded:
        files: dict[str, list[bytes]] = {}
        fields: dict[str, Any] = {}
        if request.headers.get("content-type", "").startswith("application/json"):
            fields = await request.json()
        else:
            async with request.form() as form:  # closes the spooled uploads once read
                for name, value in form.multi_items():
                    if hasattr(value, "read"):
                        files.setdefault(name, []).append(await value.read())
                    else:
                        fields[name] = value
        recorded = Recorded(
            request.url.path,
            fields,
            files,
            request.headers.get("authorization", ""),
            dict(request.headers),
            dict(request.query_params),
        )
        self.requests.append(recorded)
        return recorded

    async def _images(self, request: Request) -> Response:
        recorded = await self._read(request)
        prompt = str(recorded.fields.get("prompt", ""))
        failure = self._first_try_fails(prompt) or _failure(prompt)
        if failure is not None:
            return failure
        if "slow" in prompt:
            await asyncio.sleep(5)
        n = int(recorded.fields.get("n", 1))
        width, height = _size(str(recorded.fields.get("size", "1024x1024")))
        image = tiny_png((10, 200, 30), (width, height))
        if str(recorded.fields.get("stream", "")).lower() == "true":
            return _stream(request.url.path, image, int(recorded.fields.get("partial_images", 0)))
        data = [self._item(prompt, image, i) for i in range(n)]
        usage = {
            "input_tokens": 10,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": 10},
            "output_tokens": 100,
            "total_tokens": 110,
        }
        return JSONResponse({"created": int(time.time()), "data": data, "usage": usage})

    async def _chat(self, request: Request) -> Response:
        """Chat Completions with image inputs: the answer names the model and how many images it saw."""
        recorded = await self._read(request)
        parts = recorded.fields["messages"][-1]["content"]
        prompt = " ".join(part["text"] for part in parts if part["type"] == "text")
        images = [part["image_url"]["url"] for part in parts if part["type"] == "image_url"]
        failure = _failure(prompt)
        if failure is not None:
            return failure
        if "slow" in prompt:
            await asyncio.sleep(5)
        answer = "" if "no-answer" in prompt else f"{recorded.fields['model']} saw {len(images)} image(s)"
        return JSONResponse(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": recorded.fields["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": answer, "refusal": None},
                    }
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 8, "total_tokens": 108},
            }
        )

    def _first_try_fails(self, prompt: str) -> Response | None:
        if "flaky" not in prompt or prompt in self.tried:
            return None
        self.tried.add(prompt)
        headers = {"retry-after-ms": "1", **({"x-should-retry": "false"} if "final" in prompt else {})}
        body = {"error": {"message": "Try again.", "type": "server_error", "param": None, "code": None}}
        return JSONResponse(body, status_code=500, headers=headers)

    def _item(self, prompt: str, image: bytes, index: int) -> dict[str, Any]:
        if "huge-url" in prompt:
            self.files["huge.png"] = b"\0" * 2_000_000
            return {"url": f"{self.url}/files/huge.png"}
        if "as-url" in prompt:
            name = f"image-{len(self.files)}-{index}.png"
            self.files[name] = image
            return {"url": f"{self.url}/files/{name}", "revised_prompt": prompt + " (revised)"}
        return {"b64_json": base64.b64encode(image).decode(), "revised_prompt": prompt + " (revised)"}

    async def _file(self, request: Request) -> Response:
        data = self.files.get(request.path_params["name"])
        return Response(data, media_type="image/png") if data is not None else Response(status_code=404)


def _failure(prompt: str) -> Response | None:
    def error(
        status: int, message: str, kind: str, code: str | None, headers: dict[str, str] | None = None
    ) -> Response:
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return JSONResponse(body, status_code=status, headers=headers)

    if "rate-limited" in prompt:
        return error(
            429, "Rate limit reached for images per minute.", "requests", "rate_limit_exceeded", {"retry-after": "7"}
        )
    if "policy" in prompt:
        return error(
            400, "Your request was rejected by the safety system.", "image_generation_user_error", "moderation_blocked"
        )
    if "bad-credentials" in prompt:
        return error(401, LEAKY_MESSAGE, "invalid_request_error", "invalid_api_key")
    if "upstream-down" in prompt:
        return error(500, "The server had an error while processing your request.", "server_error", None)
    return None


def _size(size: str) -> tuple[int, int]:
    if "x" not in size:
        return 16, 16
    width, height = (int(part) for part in size.split("x"))
    return max(width // 64, 8), max(height // 64, 8)  # small stand-ins, proportional to what was asked


def _stream(path: str, image: bytes, partials: int) -> StreamingResponse:
    kind = "image_edit" if path.endswith("edits") else "image_generation"
    b64 = base64.b64encode(image).decode()
    common = {
        "created_at": int(time.time()),
        "size": "1024x1024",
        "quality": "low",
        "background": "opaque",
        "output_format": "png",
    }

    async def events() -> Any:
        for index in range(partials):
            body = {"type": f"{kind}.partial_image", "b64_json": b64, "partial_image_index": index, **common}
            yield f"event: {kind}.partial_image\ndata: {json.dumps(body)}\n\n"
        usage = {
            "input_tokens": 5,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": 5},
            "output_tokens": 50,
            "total_tokens": 55,
        }
        body = {"type": f"{kind}.completed", "b64_json": b64, "usage": usage, **common}
        yield f"event: {kind}.completed\ndata: {json.dumps(body)}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@contextmanager
def running_fake_openai() -> Iterator[FakeOpenAI]:
    """Serve the fake on 127.0.0.1:<free port> in a thread for the block's duration."""
    fake = FakeOpenAI()
    port = free_port()
    fake.url = f"http://127.0.0.1:{port}"
    server = uvicorn.Server(uvicorn.Config(fake.app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise TimeoutError("fake OpenAI server did not start")
        time.sleep(0.01)
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)
