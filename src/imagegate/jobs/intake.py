"""What a submitted request brings besides its fields: its webhook's destination and its input images, checked."""

from __future__ import annotations

import asyncio

from imagegate.errors import PayloadTooLarge
from imagegate.images import ImageHeader, ImageInfo, inspect_image, read_header
from imagegate.jobs.requests import GenerationRequest, Reference
from imagegate.settings import Settings
from imagegate.webhooks import targets
from imagegate.webhooks.targets import WebhookTarget


async def webhook_target(request: GenerationRequest, settings: Settings) -> WebhookTarget | None:
    """The webhook the request asks for, its destination checked; None when it asks for none."""
    asked = targets.requested(request.webhook_url, request.webhook_events, fallback_base=settings.public_base_url)
    if asked is None:
        return None
    url, events, base = asked
    await targets.check_destination(url, allow_private=settings.webhook_allow_private)
    return WebhookTarget(url, events, base)


async def inspect_inputs(
    uploads: list[Reference], settings: Settings, decode_slots: asyncio.Semaphore
) -> list[ImageInfo]:
    """Every input's bytes and header against the limits first, then each decoded, a few at a time per process.

    A decoded image costs width * height * 4 bytes however small its file: nothing is decoded until every
    header is within the per-image and per-request pixel budgets.
    """
    headers = [await input_header(upload, settings) for upload in uploads]
    total = sum(header.pixels for header in headers)
    if total > settings.max_request_pixels:
        raise PayloadTooLarge(
            f"The input images have {total} pixels in all; the limit is {settings.max_request_pixels} per request. "
            "Send fewer or smaller images.",
            param=uploads[0].param,
        )
    infos = []
    for upload, header in zip(uploads, headers, strict=True):
        async with decode_slots:
            infos.append(
                await asyncio.to_thread(inspect_image, upload.data, param=upload.param, max_pixels=header.pixels)
            )
    return infos


async def input_header(upload: Reference, settings: Settings) -> ImageHeader:
    """The upload's header, its bytes and pixels within the per-image limits."""
    size = await asyncio.to_thread(lambda: upload.size)
    if size > settings.max_reference_bytes:
        raise PayloadTooLarge(
            f"{upload.param} is {size} bytes; the limit is {settings.max_reference_bytes} bytes per input image.",
            param=upload.param,
        )
    header = await asyncio.to_thread(read_header, upload.data, param=upload.param)
    if header.pixels > settings.max_input_pixels:
        raise PayloadTooLarge(
            f"{upload.param} is {header.width}x{header.height} pixels; the limit is {settings.max_input_pixels} "
            "pixels per input image.",
            param=upload.param,
        )
    return header
