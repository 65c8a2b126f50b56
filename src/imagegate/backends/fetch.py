"""Download an image a provider returned as a URL, without letting that URL reach into our own network.

Only http(s); redirects only to the same host; every host is resolved and refused when any of its addresses
is not public (loopback, private, link-local such as the cloud metadata address, reserved) — unless the
provider itself lives on such an address, as a self-hosted or test upstream does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urljoin, urlsplit

import httpx2

from imagegate.errors import BackendError, BackendTimeout

Resolver = Callable[[str, int], Awaitable[list[str]]]
MAX_REDIRECTS = 3


async def resolve(host: str, port: int) -> list[str]:
    """Every address a host name resolves to (through the event loop's resolver thread)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _port(url: httpx2.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


class ImageFetcher:
    """GETs provider image URLs: bounded in time and size, public addresses only (see the module docstring)."""

    def __init__(
        self,
        *,
        provider_url: str | None,
        timeout: float,
        max_bytes: int,
        resolver: Resolver = resolve,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.provider_url = provider_url
        self.max_bytes = max_bytes
        self.resolver = resolver
        self._private_allowed: bool | None = None
        self._client = httpx2.AsyncClient(follow_redirects=False, timeout=timeout, transport=transport)

    async def fetch(self, url: str) -> bytes:
        """The bytes at url; BackendError (or BackendTimeout) when it is refused or fails."""
        if not url.startswith(("https://", "http://")):
            raise BackendError("The image provider returned a URL that is not http(s).")
        try:
            current = httpx2.URL(url)
            origin = current.host
            for _hop in range(MAX_REDIRECTS + 1):
                await self._require_public(current)
                async with self._client.stream("GET", current) as response:
                    if response.is_redirect:
                        current = self._next_hop(current, response, origin)
                        continue
                    return await self._body(response)
        except httpx2.TimeoutException:
            raise BackendTimeout("Downloading the provider's image timed out.") from None
        except (httpx2.HTTPError, httpx2.InvalidURL, OSError):
            raise BackendError("Downloading the provider's image failed.") from None
        raise BackendError("The provider's image URL redirected too often.")

    def _next_hop(self, current: httpx2.URL, response: httpx2.Response, origin: str) -> httpx2.URL:
        target = httpx2.URL(urljoin(str(current), response.headers.get("location", "")))
        if target.host != origin or target.scheme not in ("http", "https"):
            raise BackendError("The provider's image URL redirected to another host; refused.")
        return target

    async def _body(self, response: httpx2.Response) -> bytes:
        if response.status_code != 200:
            raise BackendError(f"Downloading the provider's image failed (HTTP {response.status_code}).")
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise BackendError(f"The provider's image is larger than {self.max_bytes} bytes.")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _require_public(self, url: httpx2.URL) -> None:
        if await self._allows_private():
            return
        addresses = await self._addresses(url.host, _port(url))
        if not addresses or any(not ipaddress.ip_address(a.split("%")[0]).is_global for a in addresses):
            raise BackendError("The provider's image URL points to a private or local address; refused.")

    async def _allows_private(self) -> bool:
        """True when the provider itself is on a non-public address (self-hosted, or a test upstream)."""
        if self._private_allowed is None:
            host = urlsplit(self.provider_url or "").hostname
            if not host:
                self._private_allowed = False
            else:
                port = urlsplit(self.provider_url or "").port or 443
                addresses = await self._addresses(host, port)
                self._private_allowed = any(not ipaddress.ip_address(a.split("%")[0]).is_global for a in addresses)
        return self._private_allowed

    async def _addresses(self, host: str, port: int) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host.strip("[]")))]
        except ValueError:
            pass
        try:
            return await self.resolver(host, port)
        except OSError:
            raise BackendError("The provider's image host could not be resolved.") from None

    async def aclose(self) -> None:
        """Close the connections."""
        await self._client.aclose()
