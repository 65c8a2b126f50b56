"""GET /generated/{name}: output images under unguessable names, exact matches only."""

from __future__ import annotations

import asyncio
import os

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from imagegate.errors import NotFound
from imagegate.images import CONTENT_TYPES, SERVED_NAME
from imagegate.services import AppServices

router = APIRouter(tags=["files"])

# Names are never reused and files never change, so caches may keep them as long as they like.
CACHE_CONTROL = "public, max-age=31536000, immutable"


@router.get("/generated/{name}", response_model=None)
@router.head("/generated/{name}", response_model=None, include_in_schema=False)
async def generated(name: str, request: Request, svc: AppServices) -> Response:
    """Serve one stored image; anything that is not exactly one of our names is a 404."""
    match = SERVED_NAME.match(name)
    if match is None:
        raise NotFound("No such image.")
    etag = f'"{name.rsplit(".", 1)[0]}"'
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": etag}
    storage = svc.storage
    key = f"images/{name}"
    path = storage.local_path(key)
    if path is not None:
        try:
            stat = await asyncio.to_thread(os.stat, path)
        except FileNotFoundError:
            raise NotFound("No such image (it may have expired or been deleted).") from None
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return FileResponse(path, media_type=_content_type(match[1]), headers=headers, stat_result=stat)
    try:
        data = await storage.get(key)
    except FileNotFoundError:
        raise NotFound("No such image (it may have expired or been deleted).") from None
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=_content_type(match[1]), headers=headers)


def _content_type(suffix: str) -> str:
    return CONTENT_TYPES["jpeg" if suffix == "jpg" else suffix]
