"""Where a job's webhooks go: the URL and events a caller asked for, checked against unsafe destinations."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from imagegate.errors import InvalidRequest

EVENTS = ("queued", "running", "succeeded", "failed", "cancelled")
DEFAULT_EVENTS = ("succeeded", "failed", "cancelled")
MAX_URL_CHARS = 2048
URL_PARAM = "webhook_url"
EVENTS_PARAM = "webhook_events"


@dataclass(frozen=True)
class WebhookTarget:
    """A job's webhook: the URL, the events it wants, and the base for the links in the payload."""

    url: str
    events: tuple[str, ...]
    base: str

    def as_json(self) -> dict[str, Any]:
        """What the job row keeps."""
        return {"url": self.url, "events": list(self.events), "base": self.base}


def parse_events(value: list[str] | str | None) -> tuple[str, ...]:
    """The events asked for (a list, or comma-separated text); the final ones when none are named."""
    if value is None:
        return DEFAULT_EVENTS
    items = [part.strip() for part in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
    items = [item for item in items if item]
    unknown = sorted(set(items) - set(EVENTS))
    if unknown:
        raise InvalidRequest(
            f"Unknown webhook event(s): {', '.join(unknown)}; use any of {', '.join(EVENTS)}.", param=EVENTS_PARAM
        )
    if not items:
        raise InvalidRequest(f"webhook_events is empty; name any of {', '.join(EVENTS)}.", param=EVENTS_PARAM)
    return tuple(event for event in EVENTS if event in items)


def check_syntax(url: str) -> tuple[str, int]:
    """The host and port of an http(s) URL; InvalidRequest for anything else."""
    if len(url) > MAX_URL_CHARS:
        raise InvalidRequest(f"webhook_url is longer than {MAX_URL_CHARS} characters.", param=URL_PARAM)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidRequest("webhook_url is not a valid URL.", param=URL_PARAM) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("webhook_url must be an http:// or https:// URL with a host.", param=URL_PARAM)
    if parts.username or parts.password:
        raise InvalidRequest("webhook_url must not carry a user name or password.", param=URL_PARAM)
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def is_public(address: str) -> bool:
    """True for a globally routable address: not loopback, private, link-local (cloud metadata), reserved."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_destination(url: str, *, allow_private: bool) -> None:
    """InvalidRequest unless the URL is http(s) and (without allow_private) every address it resolves to is public.

    Run at submit time and again before each send, so a name re-pointed at an internal address is caught.
    """
    host, port = check_syntax(url)
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise InvalidRequest(f"webhook_url's host {host!r} does not resolve.", param=URL_PARAM) from None
    addresses = {str(info[4][0]) for info in infos}
    if not addresses or not all(is_public(address) for address in addresses):
        raise InvalidRequest(
            f"webhook_url's host {host!r} is a loopback, private, link-local or otherwise internal address; "
            "webhooks go only to public addresses (an operator can allow others: IMAGEGATE_WEBHOOK_ALLOW_PRIVATE).",
            param=URL_PARAM,
        )


@dataclass(frozen=True)
class HeaderWebhook:
    """What the Imagegate-Webhook-* headers of the current request asked for, and where its links point."""

    url: str | None
    events: str | None
    base: Callable[[], str]  # computed only for a request that asks for a webhook


header_webhook_var: ContextVar[HeaderWebhook | None] = ContextVar("header_webhook", default=None)


def requested(
    url: str | None, events: list[str] | str | None, *, fallback_base: str | None
) -> tuple[str, tuple[str, ...], str] | None:
    """The (url, events, base) a request asks for: its body fields, else its headers; None for no webhook."""
    header = header_webhook_var.get()
    url = url if url is not None else (header.url if header else None)
    if url is None:
        if events is not None:
            raise InvalidRequest("webhook_events needs webhook_url.", param=EVENTS_PARAM)
        return None
    events = events if events is not None else (header.events if header else None)
    base = header.base() if header else (fallback_base or "")
    return url.strip(), parse_events(events), base
