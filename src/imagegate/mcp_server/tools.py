"""The MCP tools. They only translate: each calls ImageGate's own HTTP API with the caller's key, so that key's
scopes, models and limits apply and an error reads exactly as the HTTP API words it."""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import re
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Annotated, Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import httpx2
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, ImageContent, TextContent
from PIL import Image
from pydantic import Field

# A tool call's HTTP client, already carrying the caller's key (in-process for /mcp, the network for stdio).
ClientFactory = Callable[[Context[Any, Any]], AbstractAsyncContextManager[httpx2.AsyncClient]]
Contents = list[ImageContent | TextContent]
P = ParamSpec("P")
R = TypeVar("R")
PREVIEW_SIDES = (512, 256, 128, 64)
# Each status request waits this long on the server for the job to finish (a long poll), so a wait costs
# a request per step, not one per second, against the key's rate limit.
STEP_SECONDS = 10.0
FINISHED = ("succeeded", "failed", "cancelled", "expired")
ISSUED_PATH = re.compile(r"/generated/([A-Za-z0-9._-]+)$")
MAX_IMAGES = 16

INSTRUCTIONS = (
    "ImageGate makes and reads images. generate_image draws from a prompt; edit_image changes or combines images "
    "you give (URLs from earlier results, or base64); describe_image answers a question about images. Image tools "
    "return the images, their URLs and a job id. A job that takes longer than the wait returns its id instead: "
    "call get_job with it later. list_models says which models and sizes your key may use."
)

Prompt = Annotated[str, Field(description="What to draw, in detail: subject, style, composition, colours, text.")]
Model = Annotated[
    str | None, Field(description="A model name from list_models; leave it out for the service's default.")
]
Size = Annotated[
    str, Field(description="WIDTHxHEIGHT in pixels (e.g. 1024x1024), or auto; list_models gives each model's sizes.")
]
Quality = Annotated[str, Field(description="auto, low, medium or high (low is fastest).")]
Count = Annotated[int, Field(description="How many images to make.", ge=1, le=10)]
OutputFormat = Annotated[str, Field(description="png, jpeg or webp.")]
Images = Annotated[
    list[str],
    Field(
        description="1 to 16 images: URLs this service returned earlier (…/generated/…), or base64 data "
        "(plain or a data:image/…;base64, URL).",
        min_length=1,
        max_length=MAX_IMAGES,
    ),
]


class ApiError(Exception):
    """What the HTTP API refused, or why the job failed: the tool's error text, exactly."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def tool_errors(tool: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R | CallToolResult]]:
    """The tool, with an ApiError as its error result worded as the API said it (the SDK's own tool errors
    would prefix 'Error executing tool …')."""

    @functools.wraps(tool)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | CallToolResult:
        try:
            return await tool(*args, **kwargs)
        except ApiError as error:
            return CallToolResult(content=[_text(error.message)], is_error=True)

    return wrapper


def error_message(response: httpx2.Response) -> str:
    """The message the HTTP API gave, in any of its error shapes."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or f"HTTP {response.status_code}")
    if isinstance(error, str):
        return error
    return str(body.get("detail") or f"HTTP {response.status_code}") if isinstance(body, dict) else str(body)


def checked(response: httpx2.Response, *ok: int) -> Any:
    """The response's JSON; an ApiError with the API's own message for any other status."""
    if response.status_code not in (ok or (200,)):
        raise ApiError(error_message(response))
    return response.json()


@dataclass(frozen=True)
class Calls:
    """What every tool shares: the caller's HTTP client and the two limits (read at each call, so they follow
    the settings)."""

    client_for: ClientFactory
    inline_max_bytes: Callable[[], int]
    wait_seconds: Callable[[], float]

    async def submit(self, ctx: Context[Any, Any], body: dict[str, Any]) -> Contents:
        """Submit a job to the native API and finish it as the tools do."""
        async with self.client_for(ctx) as client:
            response = await client.post("/v1/images/generate", json=body, headers={"Prefer": "respond-async"})
            return await self.finish(client, checked(response, 202), ctx)

    async def finish(self, client: httpx2.AsyncClient, job: dict[str, Any], ctx: Context[Any, Any]) -> Contents:
        """The job's images once it succeeds; its id while it still runs when the wait ends; its error."""
        job = await _wait(client, job, ctx, self.wait_seconds())
        if job["status"] not in FINISHED:
            return [_text(f"Job {job['id']} is still {job['status']}; call get_job with job_id={job['id']!r} later.")]
        if job["status"] != "succeeded":
            raise ApiError(_job_error(job))
        return await _results(client, job, self.inline_max_bytes())


def build_server(
    client_for: ClientFactory, *, inline_max_bytes: Callable[[], int], wait_seconds: Callable[[], float]
) -> MCPServer:
    """The MCP server with ImageGate's tools; client_for(ctx) opens an HTTP client for the caller.

    The two limits are read at each call, so they follow the settings.
    """
    server: MCPServer = MCPServer("imagegate", instructions=INSTRUCTIONS)
    calls = Calls(client_for, inline_max_bytes, wait_seconds)
    for add_tool in (_add_generate_image, _add_edit_image, _add_describe_image, _add_get_job, _add_list_models):
        add_tool(server, calls)
    return server


def _add_generate_image(server: MCPServer, calls: Calls) -> None:
    @server.tool(
        description="Generate images from a text prompt. Returns each image, its URL (valid until the job expires) "
        "and the job id; a job still running when the wait ends returns only its id, for get_job."
    )
    @tool_errors
    async def generate_image(
        ctx: Context[Any, Any],
        prompt: Prompt,
        model: Model = None,
        size: Size = "auto",
        quality: Quality = "auto",
        count: Count = 1,
        output_format: OutputFormat = "png",
    ) -> Contents:
        body = {"prompt": prompt, "size": size, "quality": quality, "count": count, "output_format": output_format}
        return await calls.submit(ctx, _with_model(body, model))


def _add_edit_image(server: MCPServer, calls: Calls) -> None:
    @server.tool(
        description="Edit or combine images following a prompt: give 1 to 16 images (URLs this service returned, "
        "or base64) and optionally a mask, transparent where the first image may change. Returns like generate_image."
    )
    @tool_errors
    async def edit_image(
        ctx: Context[Any, Any],
        prompt: Annotated[str, Field(description="What to change, or what to make from the images.")],
        images: Images,
        mask: Annotated[
            str | None,
            Field(description="Optional PNG mask the size of the first image: a URL from this service or base64."),
        ] = None,
        model: Model = None,
        size: Size = "auto",
        quality: Quality = "auto",
        count: Count = 1,
        output_format: OutputFormat = "png",
    ) -> Contents:
        async with calls.client_for(ctx) as client:
            body: dict[str, Any] = {
                "prompt": prompt,
                "size": size,
                "quality": quality,
                "count": count,
                "output_format": output_format,
                "reference_images_base64": await _all_as_base64(client, images),
            }
            if mask is not None:
                body["mask_base64"] = await _as_base64(client, mask, "mask")
            response = await client.post(
                "/v1/images/generate", json=_with_model(body, model), headers={"Prefer": "respond-async"}
            )
            return await calls.finish(client, checked(response, 202), ctx)


def _add_describe_image(server: MCPServer, calls: Calls) -> None:
    @server.tool(
        description="Ask a vision model about 1 to 16 images (URLs this service returned, or base64): describe "
        "them, read their text, compare them. Returns the model's answer as text."
    )
    @tool_errors
    async def describe_image(
        ctx: Context[Any, Any],
        prompt: Annotated[str, Field(description="The question or instruction about the images.")],
        images: Images,
        model: Annotated[
            str | None, Field(description="A model from list_models that can describe; the default if omitted.")
        ] = None,
    ) -> str:
        async with calls.client_for(ctx) as client:
            body = _with_model({"prompt": prompt, "images_base64": await _all_as_base64(client, images)}, model)
            await ctx.report_progress(0, None, "asking the vision model")
            answer = checked(await client.post("/v1/vision", json=body))
        return str(answer["text"])


def _add_get_job(server: MCPServer, calls: Calls) -> None:
    @server.tool(
        description="A job's status by its id (img_…, from an earlier tool result), waiting a while for it to "
        "finish; returns its images once it has succeeded, or why it failed."
    )
    @tool_errors
    async def get_job(
        ctx: Context[Any, Any],
        job_id: Annotated[str, Field(description="The job id, img_…, that an earlier tool returned.")],
        wait: Annotated[
            float | None,
            Field(description="Seconds to wait for it to finish; the service's usual wait if omitted.", ge=0, le=600),
        ] = None,
    ) -> Contents:
        async with calls.client_for(ctx) as client:
            job = checked(await client.get(f"/v1/images/jobs/{job_id}"))
            job = await _wait(client, job, ctx, calls.wait_seconds() if wait is None else wait)
            if job["status"] == "succeeded":
                return await _results(client, job, calls.inline_max_bytes())
        if job["status"] in ("failed", "cancelled"):
            raise ApiError(_job_error(job))
        return [_text(f"Job {job_id} is {job['status']}.")]


def _add_list_models(server: MCPServer, calls: Calls) -> None:
    @server.tool(
        description="The models this key may use, each with the sizes it makes, whether it is the default and "
        "whether describe_image can use it."
    )
    @tool_errors
    async def list_models(ctx: Context[Any, Any]) -> str:
        async with calls.client_for(ctx) as client:
            models = checked(await client.get("/v1/images/models"))["data"]
        return "\n".join(_model_line(model) for model in models) or "No model is allowed for this key."


def _model_line(model: dict[str, Any]) -> str:
    sizes = model.get("sizes")
    side = model.get("max_side")
    shown = ", ".join(sizes) if sizes else f"auto or any WIDTHxHEIGHT from 16 to {side} pixels a side"
    notes = [note for flag, note in (("default", "default"), ("can_describe", "describe_image")) if model.get(flag)]
    return f"{model['id']}: sizes {shown}" + (f" ({', '.join(notes)})" if notes else "")


def _with_model(body: dict[str, Any], model: str | None) -> dict[str, Any]:
    return {**body, "model": model} if model else body


def _text(text: str) -> TextContent:
    return TextContent(type="text", text=text)


def _job_error(job: dict[str, Any]) -> str:
    """The job's error as the HTTP API gives it, and which job it was."""
    return f"{job.get('error') or job['status']} (job {job['id']} {job['status']})"


async def _wait(
    client: httpx2.AsyncClient, job: dict[str, Any], ctx: Context[Any, Any], seconds: float
) -> dict[str, Any]:
    """The job once finished, or as it is when `seconds` have passed; MCP progress after each step."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while job["status"] not in FINISHED:
        left = started + seconds - loop.time()
        if left <= 0:
            break
        await ctx.report_progress(round(loop.time() - started, 1), seconds, f"job {job['id']} is {job['status']}")
        step = min(left, STEP_SECONDS)
        job = checked(await client.get(f"/v1/images/jobs/{job['id']}", params={"wait": f"{step:.1f}"}))
    return job


async def _results(client: httpx2.AsyncClient, job: dict[str, Any], limit: int) -> Contents:
    contents: Contents = []
    for image in job.get("images", []):
        contents.append(await _inline(client, image, limit))
    lines = [f"Job {job['id']} succeeded: {len(job.get('images', []))} image(s)."]
    lines += [image["url"] for image in job.get("images", [])]
    contents.append(_text("\n".join(lines)))
    return contents


async def _inline(client: httpx2.AsyncClient, image: dict[str, Any], limit: int) -> ImageContent | TextContent:
    """The image itself when small enough, else a downscaled JPEG preview; the URL is in the text either way."""
    response = await client.get(f"/generated/{image['name']}")
    if response.status_code != 200:
        return _text(f"(could not fetch {image['url']}: {error_message(response)})")
    data = response.content
    if len(data) <= limit:
        return ImageContent(type="image", data=base64.b64encode(data).decode(), mime_type=f"image/{image['format']}")
    preview = await asyncio.to_thread(_preview, data, limit)
    return ImageContent(type="image", data=base64.b64encode(preview).decode(), mime_type="image/jpeg")


def _preview(data: bytes, limit: int) -> bytes:
    """A JPEG of the image scaled down until it fits within limit bytes, or the smallest one tried."""
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
    preview = b""
    for side in PREVIEW_SIDES:
        scaled = rgb.copy()
        scaled.thumbnail((side, side))
        buffer = io.BytesIO()
        scaled.save(buffer, format="JPEG", quality=75)
        preview = buffer.getvalue()
        if len(preview) <= limit:
            break
    return preview


async def _all_as_base64(client: httpx2.AsyncClient, images: list[str]) -> list[str]:
    """Every image argument as base64, each named images[i] in an error."""
    return [await _as_base64(client, item, f"images[{i}]") for i, item in enumerate(images)]


async def _as_base64(client: httpx2.AsyncClient, item: str, param: str) -> str:
    """An image argument as base64: an issued URL is fetched from this service, anything else passes as base64."""
    if not item.startswith(("http://", "https://")):
        return item  # base64 or a data: URL; the HTTP API checks it and names the problem
    issued = ISSUED_PATH.search(urlsplit(item).path)
    if issued is None:
        raise ApiError(
            f"{param}: {item} is not an image URL this service returned (…/generated/NAME); "
            "give one of those or the image as base64."
        )
    response = await client.get(f"/generated/{issued[1]}")
    if response.status_code != 200:
        raise ApiError(f"{param}: {item} is not available ({error_message(response)}); it may have expired.")
    return base64.b64encode(response.content).decode()
