"""/docs and /redoc in a real headless Chromium against a real server, with every non-loopback request refused."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.fakes.browser import launched_chromium
from tests.fakes.server import ServerProcess, base_env, serve

pytestmark = pytest.mark.acceptance
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "api"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
# Operations of each surface, as both pages name them (their summaries).
OPERATIONS = ("Submit Job", "Get Job", "Generations", "Edits", "Usage", "Get Image")
RENDERED_MS = 60_000  # a deadline, not a measurement: parsing a 1-2 MB bundle on a busy machine takes its time


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module."""
    with launched_chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """ImageGate with its defaults (the demo backend) in a fresh folder."""
    with serve(base_env(IMAGEGATE_ADMIN_PASSWORD="docs-admin-password"), tmp_path_factory.mktemp("docs")) as running:
        yield running


def offline_page(browser: Browser, width: int) -> tuple[Page, list[str]]:
    """A page whose requests off this machine are refused, and the list of those it tried."""
    page = browser.new_context(viewport={"width": width, "height": 900}).new_page()
    refused: list[str] = []

    def only_loopback(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    return page, refused


def shot(page: Page, name: str) -> None:
    """Keep a screenshot of the first screen as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def test_swagger_ui_shows_every_surface_and_authorize_offline(browser: Browser, server: ServerProcess) -> None:
    page, refused = offline_page(browser, 1280)
    page.goto(f"{server.url}/docs")
    expect(page.get_by_role("button", name="Authorize")).to_be_visible(timeout=RENDERED_MS)
    for operation in OPERATIONS:
        expect(page.locator(".opblock-summary-description", has_text=operation).first).to_be_visible()
    shot(page, "docs")
    page.get_by_role("button", name="Authorize").click()
    expect(page.get_by_text("bearerAuth")).to_be_visible()
    shot(page, "docs-authorize")
    assert refused == []
    page.context.close()


def test_redoc_shows_every_surface_offline(browser: Browser, server: ServerProcess) -> None:
    page, refused = offline_page(browser, 1280)
    page.goto(f"{server.url}/redoc")
    expect(page.get_by_role("heading", name="ImageGate").first).to_be_visible(timeout=RENDERED_MS)
    for operation in OPERATIONS:
        # An operation's heading also holds a link named by its anchor: match the heading's own text.
        heading = page.locator("h2").filter(has_text=re.compile(rf"^{re.escape(operation)}\s*$")).first
        heading.scroll_into_view_if_needed()
        expect(heading).to_be_visible()
    expect(page.get_by_text("bearerAuth").first).to_be_attached()  # the key, under Authentication
    shot(page, "redoc")
    assert refused == []
    page.context.close()
