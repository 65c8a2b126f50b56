"""GET /generated/{name}: output images under unguessable names, exact matches only; and how every surface
answers with a stored object (the local file, a presigned redirect, or the bytes streamed from the store)."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse

from imagegate.errors import NotFound
from imagegate.images import CONTENT_TYPES, SERVED_NAME
from imagegate.services import services

router = APIRouter(tags=["files"])

# Names are never reused and files never change, so caches may keep them as long as they like.
CACHE_CONTROL = "public, max-age=31536000, immutable"
# A presigned URL stops working: a cache must not keep the redirect to it.
REDIRECT_CACHE_CONTROL = "no-store"


@router.get("/generated/{name}", response_model=None)
@router.head("/generated/{name}", response_model=None, include_in_schema=False)
async def generated(name: str, request: Request) -> Response:
    """Serve one stored image; anything that is not exactly one of our names is a 404."""
    match = SERVED_NAME.match(name)
    if match is None:
        raise NotFound("No such image.")
    etag = f'"{name.rsplit(".", 1)[0]}"'
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": etag}
    try:
        return await stored_response(request, f"images/{name}", media_type=_content_type(match[1]), headers=headers)
    except FileNotFoundError:
        raise NotFound("No such image (it may have expired or been deleted).") from None


async def stored_response(request: Request, key: str, *, media_type: str, headers: dict[str, str]) -> Response:
    """The stored object as the answer to this GET or HEAD; FileNotFoundError when it is gone.

    A local file is sent by the server; a remote object is streamed through, or with IMAGEGATE_STORAGE_PRESIGN
    redirected to, after its existence (and the caller's If-None-Match) is checked here as for a local file.
    """
    svc = services(request)
    storage, settings = svc.storage, svc.settings
    not_modified = _matches(request, headers.get("ETag"))
    path = storage.local_path(key)
    if path is not None:
        stat = await asyncio.to_thread(os.stat, path)
        if not_modified:
            return Response(status_code=304, headers=headers)
        return FileResponse(path, media_type=media_type, headers=headers, stat_result=stat)
    if request.method == "HEAD" or not_modified or settings.storage_presign:
        found = await storage.stat(key)
        if not_modified:
            return Response(status_code=304, headers=headers)
        if request.method == "HEAD":
            return Response(media_type=media_type, headers={**headers, "Content-Length": str(found.size)})
        url = await storage.presign(key, timedelta(seconds=settings.storage_presign_seconds))
        if url is not None:
            return RedirectResponse(url, headers={"Cache-Control": REDIRECT_CACHE_CONTROL})
    download = await storage.open(key)
    return StreamingResponse(
        download.chunks, media_type=media_type, headers={**headers, "Content-Length": str(download.size)}
    )


def _matches(request: Request, etag: str | None) -> bool:
    return etag is not None and etag in request.headers.get("if-none-match", "")


def _content_type(suffix: str) -> str:
    return CONTENT_TYPES["jpeg" if suffix == "jpg" else suffix]
