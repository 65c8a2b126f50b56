"""A small client for a running ImageGate (used by `imagegate generate` and `imagegate describe`)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2

POLL_SECONDS = 1.0
# Told of the job at each poll, with the seconds since it was submitted.
Progress = Callable[[dict[str, Any], float], None]


class ClientError(Exception):
    """The server refused the request or the job failed."""


def _error_text(response: httpx2.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} {response.text[:200]}"
    error = body.get("error")
    if isinstance(error, dict):
        return f"{response.status_code} {error.get('code')}: {error.get('message')}"
    return f"{response.status_code} {body.get('error_code')}: {error}"


def output_paths(output: Path, count: int) -> list[Path]:
    """out.png for one image; out.png, out-2.png, … for several."""
    return [output if i == 0 else output.with_name(f"{output.stem}-{i + 1}{output.suffix}") for i in range(count)]


def taken_paths(output: Path, count: int) -> list[Path]:
    """The files a generation of count images would overwrite."""
    return [path for path in output_paths(output, count) if path.exists()]


async def generate_to_files(
    *,
    url: str,
    key: str,
    body: dict[str, Any],
    output: Path,
    timeout: float,
    progress: Progress | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> list[Path]:
    """Submit, wait for the job (polling past the server's own wait), and save its images.

    With progress, the job is submitted asynchronously and progress(job, seconds) is told of each poll.
    """
    headers = {"Authorization": f"Bearer {key}", **({"Prefer": "respond-async"} if progress else {})}
    async with httpx2.AsyncClient(
        base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
    ) as client:
        try:
            response = await client.post("/v1/images/generate", json=body)
        except httpx2.HTTPError as exc:
            raise ClientError(f"cannot reach {url}: {exc}") from None
        if response.status_code not in (200, 202):
            raise ClientError(_error_text(response))
        job = await _wait(client, response.json(), timeout, progress)
        paths = output_paths(output, len(job["images"]))
        for image, path in zip(job["images"], paths, strict=True):
            download = await client.get(image["url"])
            if download.status_code != 200:
                raise ClientError(f"download of {image['url']} failed: {_error_text(download)}")
            path.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(path.write_bytes, download.content)
        return paths


async def _wait(
    client: httpx2.AsyncClient, job: dict[str, Any], timeout: float, progress: Progress | None
) -> dict[str, Any]:
    started = asyncio.get_running_loop().time()
    deadline = started + timeout
    while True:
        if progress is not None:
            progress(job, asyncio.get_running_loop().time() - started)
        if job["status"] not in ("queued", "running"):
            break
        if asyncio.get_running_loop().time() > deadline:
            raise ClientError(f"job {job['id']} still {job['status']} after {timeout:.0f}s; see {job['status_url']}")
        await asyncio.sleep(POLL_SECONDS)
        response = await client.get(job["status_url"])
        if response.status_code != 200:
            raise ClientError(_error_text(response))
        job = response.json()
    if job["status"] != "succeeded":
        raise ClientError(f"job {job['id']} {job['status']}: {job.get('error')} ({job.get('error_code')})")
    return job


async def describe_images(
    *, url: str, key: str, prompt: str, images: list[Path], model: str | None, timeout: float
) -> str:
    """Ask POST /v1/vision about the image files; the model's answer."""
    encoded = [base64.b64encode(await asyncio.to_thread(path.read_bytes)).decode() for path in images]
    body: dict[str, Any] = {"prompt": prompt, "images_base64": encoded, **({"model": model} if model else {})}
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx2.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout) as client:
        try:
            response = await client.post("/v1/vision", json=body)
        except httpx2.HTTPError as exc:
            raise ClientError(f"cannot reach {url}: {exc}") from None
    if response.status_code != 200:
        raise ClientError(_error_text(response))
    text: str = response.json()["text"]
    return text
