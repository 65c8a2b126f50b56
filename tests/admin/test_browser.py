"""The operator's journey in a real headless Chromium against a real server; one screenshot per page."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.fakes.browser import launched_chromium
from tests.fakes.chatgpt_usage import hours_ago
from tests.fakes.chatgpt_usage import login as codex_login
from tests.fakes.codex import write_fake_codex
from tests.fakes.postgres import free_port
from tests.fakes.server import ServerProcess, base_env, serve

pytestmark = pytest.mark.acceptance
PASSWORD = "browser-admin-password"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "admin"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module."""
    with launched_chromium() as launched:
        yield launched


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """ImageGate on SQLite with the demo backend (the default) and a Codex backend run by the fake codex."""
    backends = {
        "demo": {"type": "demo", "concurrency": 4},
        "codex": {
            "type": "codex",
            "concurrency": 1,
            "options": {
                "executable": str(write_fake_codex(tmp_path)),
                "accounts": [
                    {"name": "main", "home": str(tmp_path / "cx")},
                    {"name": "spare", "home": str(tmp_path / "cx-spare")},
                ],
                "usage_url": f"http://127.0.0.1:{free_port()}/backend-api/wham/usage",  # nothing listens there
            },
        },
    }
    codex_login(tmp_path / "cx", "at-browser-secret", refresh_token="rt-browser-secret", last_refresh=hours_ago(30))
    env = base_env(
        IMAGEGATE_ADMIN_PASSWORD=PASSWORD,
        IMAGEGATE_BACKENDS=json.dumps(backends),
        IMAGEGATE_MODELS=json.dumps({"demo": "demo", "gpt-image-codex": "codex"}),
    )
    with serve(env, tmp_path) as running:
        yield running


def shot(page: Page, name: str) -> None:
    """Keep a full-page screenshot as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def log_in(page: Page, url: str, password: str = PASSWORD) -> None:
    """Open the admin and log in."""
    page.goto(f"{url}/admin")
    expect(page).to_have_url(re.compile(r"/admin/login"))
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_an_operators_day(browser: Browser, server: ServerProcess) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()

    page.goto(f"{server.url}/admin")
    shot(page, "01-login")
    log_in(page, server.url, "not the password")
    expect(page.get_by_role("alert")).to_contain_text("Wrong password")
    log_in(page, server.url)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    shot(page, "02-overview")

    # A key, revealed once.
    page.get_by_role("link", name="Keys").click()
    page.get_by_label("Name", exact=True).fill("browser test")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-key").inner_text().strip()
    assert secret.startswith("ig_")
    shot(page, "03-keys")
    page.reload()
    expect(page.locator("#new-key")).to_have_count(0)
    assert secret not in page.content()
    handle = page.locator("table.keys code", has_text="key_").first.inner_text()
    page.get_by_role("link", name="browser test").click()
    page.get_by_label("Images / day").fill("50")
    shot(page, "03b-key-limits")
    page.get_by_role("button", name="Save limits").click()
    expect(page.get_by_role("status")).to_contain_text(f"Saved {handle}")

    # A refused change keeps the navigation and everything typed, and says what to fix beside the form.
    page.get_by_label("Name", exact=True).fill("browser test, renamed")
    page.get_by_label("Expires").fill("2001-01-01")
    page.get_by_label("Images / month").fill("900")
    page.get_by_role("button", name="Save limits").click()
    expect(page.locator("#form-error")).to_contain_text("The expiry date is in the past.")
    expect(page.get_by_role("alert")).to_contain_text("Not saved: The expiry date is in the past.")
    expect(page.get_by_label("Name", exact=True)).to_have_value("browser test, renamed")
    expect(page.get_by_label("Images / month")).to_have_value("900")
    expect(page.get_by_label("Images / day")).to_have_value("50")
    expect(page.get_by_label("Expires")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_role("link", name="History")).to_be_visible()
    shot(page, "03b2-key-edit-refused")
    page.get_by_label("Expires").fill("")
    page.get_by_label("Name", exact=True).fill("browser test")
    page.get_by_role("button", name="Save limits").click()
    expect(page.get_by_role("status")).to_contain_text(f"Saved {handle}")

    # Rotation: the new secret once, with a copy button; the old one works through the grace period.
    page.get_by_label("Old secret keeps working").select_option(label="1 hour")
    page.get_by_role("button", name="Rotate secret").click()
    rotated = page.locator("#new-key").inner_text().strip()
    assert rotated.startswith("ig_")
    assert rotated != secret
    expect(page.locator(".facts")).to_contain_text("keeps working until")
    copy = page.locator(".reveal button.copy")
    expect(copy).to_be_visible()
    copy.click()
    expect(copy).to_have_text("Copied")
    shot(page, "03c-key-rotated")
    for token in (secret, rotated):
        assert httpx2.get(f"{server.url}/v1/usage", headers={"Authorization": f"Bearer {token}"}, timeout=10).is_success
    secret = rotated

    # Deleting asks first; keeping it goes back.
    page.get_by_role("button", name="Delete key").click()
    expect(page.get_by_role("heading", name=f"Delete key browser test ({handle})?")).to_be_visible()
    shot(page, "03d-confirm-delete-key")
    page.get_by_role("link", name="Keep it").click()
    expect(page.locator("table.keys code", has_text=handle)).to_have_count(1)

    # A playground generation, shown when it finishes.
    page.get_by_role("link", name="Playground").click()
    page.get_by_label("Prompt").fill("a lighthouse on a cliff at dusk")
    page.get_by_label("Size").fill("192x128")
    shot(page, "04-playground")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("img.thumb").first).to_be_visible(timeout=30_000)
    assert page.locator("img.thumb").first.evaluate("img => img.naturalWidth") == 192
    expect(page.locator(".status").first).to_have_text("succeeded")
    shot(page, "05-job")

    # Found again in the history, by its prompt.
    page.get_by_role("link", name="History").click()
    page.get_by_label("Prompt").fill("lighthouse")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.jobs tbody tr")
    expect(rows).to_have_count(1)
    shot(page, "06-history")
    rows.first.locator("a").first.click()
    expect(page.get_by_role("heading", name="Prompt")).to_be_visible()

    # The key's page counts what it made against its quota.
    page.get_by_role("link", name="browser test").first.click()
    expect(page.locator("#images-today")).to_have_text("1 / 50")
    expect(page.locator("table.per-day tbody tr").first).to_contain_text("1")
    shot(page, "06a-key-usage")

    # The API takes the key until it is disabled.
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx2.get(f"{server.url}/v1/images/jobs", headers=headers, timeout=10).status_code == 200
    page.get_by_role("link", name="Keys").click()
    page.locator("tr", has_text=handle).get_by_role("button", name="Disable").click()
    expect(page.locator("tr", has_text=handle).locator(".status")).to_have_text("disabled")
    refused = httpx2.get(f"{server.url}/v1/images/jobs", headers=headers, timeout=10)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "key_disabled"

    # A Codex run shows up in the per-account statistics.
    codex = httpx2.post(
        f"{server.url}/v1/images/generate",
        headers=headers | {"Authorization": f"Bearer {secret}"},
        json={"prompt": "via codex", "model": "gpt-image-codex", "size": "64x64"},
        timeout=30,
    )
    assert codex.status_code == 403  # the key is disabled by now; enable it for this one
    page.locator("tr", has_text=handle).get_by_role("button", name="Enable").click()
    codex = httpx2.post(
        f"{server.url}/v1/images/generate",
        headers=headers,
        json={"prompt": "via codex", "model": "gpt-image-codex", "size": "64x64"},
        timeout=30,
    )
    assert codex.status_code == 200, codex.text
    page.get_by_role("link", name="Codex accounts").click()
    card = page.locator("section.account", has_text="main")
    expect(card.locator(".status")).to_have_text("free")
    expect(card.locator(".rate")).to_have_text("100 %")
    expect(card.locator(".account-id")).to_have_text("acc01234")
    expect(card.locator(".token")).to_contain_text("(green)")
    expect(card.locator(".quota")).to_contain_text("unknown")  # its usage endpoint cannot be reached
    expect(card.locator("tr", has_text="24h").locator("td").nth(2)).to_have_text("1")
    expect(page.locator("section.account", has_text="spare").locator(".rate")).to_have_text("-")
    page.get_by_label("Dispatch mode").select_option("round-robin")
    page.get_by_role("button", name="Save dispatch").click()
    expect(page.get_by_role("status")).to_contain_text("dispatch is now round-robin")
    expect(page.get_by_label("Dispatch mode")).to_have_value("round-robin")
    assert "rt-browser-secret" not in page.content()
    shot(page, "06b-codex-accounts")

    # A running job is cancelled, then deleted after a confirmation.
    slow = httpx2.post(
        f"{server.url}/v1/images/jobs",
        headers=headers,
        json={"prompt": "slow", "model": "gpt-image-codex", "size": "64x64"},
        timeout=30,
    )
    assert slow.status_code == 202, slow.text
    slow_id = slow.json()["id"]
    page.goto(f"{server.url}/admin/jobs/{slow_id}")
    expect(page.locator("h1 .status")).to_have_text("running", timeout=30_000)
    expect(page.get_by_role("button", name="Delete job and files")).to_be_disabled()
    shot(page, "06c-job-running")
    page.get_by_role("button", name="Cancel job").click()
    expect(page.get_by_role("status")).to_contain_text(f"Cancelled: job {slow_id}")
    expect(page.locator("h1 .status")).to_have_text("cancelled")
    page.get_by_role("button", name="Delete job and files").click()
    expect(page.get_by_role("heading", name=f"Delete job {slow_id}?")).to_be_visible()
    shot(page, "06d-confirm-delete-job")
    page.get_by_role("button", name="Delete job and files").click()
    expect(page.get_by_role("status")).to_contain_text(f"Deleted job {slow_id}")
    deleted_row = page.locator("table.jobs tr", has_text=slow_id)
    expect(deleted_row.locator(".deleted-by")).to_have_text("by the operator")
    shot(page, "06d2-history-deleted-job")
    deleted_row.get_by_role("link", name=slow_id).click()
    expect(page.locator(".flash.deleted")).to_contain_text("Deleted by the operator in the admin UI")
    shot(page, "06d3-job-deleted")

    # The status page: what runs, and no secret on it.
    page.get_by_role("link", name="Status").click()
    expect(page.get_by_role("heading", name="Status")).to_be_visible()
    expect(page.locator("table.backends tr", has_text="codex")).to_contain_text("gpt-image-codex")
    content = page.content()
    assert PASSWORD not in content
    assert "rt-browser-secret" not in content
    shot(page, "06e-status")

    # Maintenance and the audit trail.
    page.get_by_role("link", name="Maintenance").click()
    page.get_by_role("button", name="Run cleanup now").click()
    expect(page.get_by_role("status")).to_contain_text("Cleanup: expired 0 job(s)")
    shot(page, "07-maintenance")
    page.get_by_role("link", name="Audit").click()
    expect(page.locator("td", has_text="key.disable")).to_have_count(1)
    expect(page.locator("td", has_text="admin.cleanup")).to_have_count(1)
    expect(page.locator("td", has_text="admin.job_cancel")).to_have_count(1)
    shot(page, "08-audit")

    # Logging out ends the session on the server: the old cookie opens nothing.
    cookie = next(c for c in context.cookies() if c["name"] == "imagegate_admin")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/admin/login"))
    thief = browser.new_context()
    thief.add_cookies(
        [{"name": cookie["name"], "value": cookie["value"], "domain": cookie["domain"], "path": cookie["path"]}]
    )
    stolen = thief.new_page()
    stolen.goto(f"{server.url}/admin/keys")
    expect(stolen).to_have_url(re.compile(r"/admin/login"))
    thief.close()
    context.close()


def test_a_phone_sized_screen(browser: Browser, server: ServerProcess) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    log_in(page, server.url)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    assert_fits(page, "overview")
    shot(page, "09-phone-overview")
    page.get_by_role("link", name="Keys").click()
    page.get_by_label("Name", exact=True).fill("phone")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#new-key")).to_be_visible()
    assert_fits(page, "keys")
    shot(page, "09a-phone-keys")
    page.get_by_role("link", name="phone").click()
    expect(page).to_have_url(re.compile(r"/admin/keys/[^/?]+$"))  # measured once the key page is there
    page.wait_for_load_state()
    assert_fits(page, "key")
    shot(page, "09b-phone-key")
    page.get_by_label("Expires").fill("2001-01-01")
    page.get_by_role("button", name="Save limits").click()
    expect(page.locator("#form-error")).to_contain_text("in the past")
    assert_fits(page, "refused key edit")
    shot(page, "09b2-phone-key-refused")
    page.get_by_role("link", name="Playground").click()
    page.get_by_label("Prompt").fill("a very long prompt " * 40)
    page.get_by_label("Size").fill("1024x256")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("img.thumb").first).to_be_visible(timeout=30_000)
    assert_fits(page, "job")
    shot(page, "09c-phone-job")
    page.get_by_role("button", name="Delete job and files").click()
    page.get_by_role("button", name="Delete job and files").click()  # on the confirmation page
    expect(page.locator("table.jobs .deleted-by").first).to_have_text("by the operator")
    page.wait_for_load_state()
    assert_fits(page, "history")
    shot(page, "09c2-phone-history-deleted")
    page.get_by_role("link", name="Status").click()
    expect(page).to_have_url(re.compile(r"/admin/status$"))
    page.wait_for_load_state()
    assert_fits(page, "status")
    shot(page, "09d-phone-status")
    context.close()


def assert_fits(page: Page, name: str) -> None:
    """The page does not scroll sideways on a 390 px wide screen."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390 + 1, f"the {name} page should not scroll sideways on a phone ({width} px)"
    # A card scrolls its own overflow, so a table wider than the screen hides columns without widening the page.
    cut = page.evaluate("[...document.querySelectorAll('.card')].filter(c => c.scrollWidth > c.clientWidth + 1).length")
    assert cut == 0, f"{cut} card(s) of the {name} page scroll sideways on a phone"
