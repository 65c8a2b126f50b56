"""Downloading provider image URLs: same-host redirects only, no private or local address (no real network)."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from imagegate.backends.fetch import ImageFetcher
from imagegate.backends.openai import OpenAIBackend
from imagegate.errors import BackendError
from tests.fakes.backends import tiny_png
from tests.helpers import make_settings

PUBLIC = "93.184.216.34"
NAMES = {
    "api.provider.test": [PUBLIC],
    "cdn.provider.test": ["93.184.216.35"],
    "sneaky.provider.test": ["127.0.0.1"],
    "metadata.provider.test": ["169.254.169.254"],
    "mixed.provider.test": ["93.184.216.36", "10.0.0.7"],
    "local.provider.test": ["192.168.1.20"],
}
IMAGE = tiny_png()


async def fake_resolver(host: str, port: int) -> list[str]:
    """A DNS that knows only NAMES (never the network)."""
    if host not in NAMES:
        raise OSError(f"unknown host {host}")
    return NAMES[host]


def provider(request: httpx2.Request) -> httpx2.Response:
    """Images, and redirects: /to/<url> goes wherever it says."""
    path = request.url.path
    if path.startswith("/to/"):
        return httpx2.Response(302, headers={"location": path.removeprefix("/to/").replace(":/", "://", 1)})
    if path == "/relative":
        return httpx2.Response(301, headers={"location": "/image.png"})
    if path == "/loop":
        return httpx2.Response(302, headers={"location": "/loop"})
    return httpx2.Response(200, content=IMAGE)


def fetcher(provider_url: str = "https://api.provider.test/v1") -> ImageFetcher:
    """A fetcher whose network is the fake provider and whose DNS is fake_resolver."""
    return ImageFetcher(
        provider_url=provider_url,
        timeout=5,
        max_bytes=1024 * 1024,
        resolver=fake_resolver,
        transport=httpx2.MockTransport(provider),
    )


async def test_a_public_image_and_a_same_host_redirect_are_fetched() -> None:
    downloads = fetcher()
    assert await downloads.fetch("https://cdn.provider.test/image.png") == IMAGE
    assert await downloads.fetch("https://cdn.provider.test/relative") == IMAGE
    assert await downloads.fetch("https://cdn.provider.test/to/https:/cdn.provider.test/image.png") == IMAGE
    await downloads.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/image.png",
        "http://[::1]/image.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/image.png",
        "http://0.0.0.0/image.png",
        "http://[::ffff:127.0.0.1]/image.png",
        "https://sneaky.provider.test/image.png",
        "https://metadata.provider.test/image.png",
        "https://mixed.provider.test/image.png",
        "https://unknown.provider.test/image.png",
        "https://cdn.provider.test/to/http:/127.0.0.1/image.png",
        "https://cdn.provider.test/to/https:/api.provider.test/image.png",
        "https://cdn.provider.test/loop",
        "file:///etc/passwd",
    ],
)
async def test_private_local_and_cross_host_urls_are_refused(url: str) -> None:
    downloads = fetcher()
    with pytest.raises(BackendError) as refused:
        await downloads.fetch(url)
    assert "127.0.0.1" not in refused.value.message
    await downloads.aclose()


async def test_a_provider_on_a_private_address_may_serve_images_from_one() -> None:
    downloads = fetcher("http://local.provider.test:8080/v1")
    assert await downloads.fetch("http://10.1.2.3/image.png") == IMAGE
    assert await downloads.fetch("http://127.0.0.1:9000/image.png") == IMAGE
    with pytest.raises(BackendError):  # still the same host only
        await downloads.fetch("http://10.1.2.3/to/http:/10.9.9.9/image.png")
    await downloads.aclose()


async def test_the_openai_backend_refuses_a_loopback_url_from_a_public_provider(tmp_path: Path) -> None:
    settings = make_settings("sqlite+aiosqlite://", tmp_path)
    backend = OpenAIBackend(
        name="openai", options={"base_url": f"https://{PUBLIC}/v1", "api_key": "sk-test"}, settings=settings
    )
    try:
        with pytest.raises(BackendError) as refused:
            await backend._download("http://127.0.0.1:1/files/image.png")
        assert "private or local address" in refused.value.message
    finally:
        await backend.aclose()
