"""Admin login, sessions, CSRF and throttling, in-process (the browser journey is in test_browser.py)."""

from __future__ import annotations

import re

import httpx2
from sqlalchemy import func, select
from typer.testing import CliRunner

from imagegate.admin import service
from imagegate.cli import app as cli
from imagegate.keys.models import ApiKey, AuditEvent
from tests.helpers import ADMIN_PASSWORD, Harness, csrf_of, login

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def test_pages_need_a_login(harness: Harness) -> None:
    response = await harness.client.get("/admin/keys")
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/login?next=/admin/keys"


async def test_login_sets_a_strict_http_only_cookie_and_opens_the_pages(harness: Harness) -> None:
    response = await login(harness.client)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/admin" in cookie
    for path in ["/admin", "/admin/keys", "/admin/history", "/admin/playground", "/admin/maintenance", "/admin/audit"]:
        page = await harness.client.get(path)
        assert page.status_code == 200, path
        assert "Log out" in page.text


async def test_wrong_password_is_refused_and_counted(harness: Harness) -> None:
    response = await login(harness.client, "not the password")
    assert response.status_code == 401
    assert "Wrong password" in response.text
    async with harness.app.state.services.sessions() as session:
        assert await session.scalar(select(func.count()).where(AuditEvent.action == "admin.login_failed")) == 1


async def test_failed_logins_are_throttled_per_client(harness: Harness) -> None:
    for _ in range(harness.app.state.services.settings.admin_login_max_failures):
        assert (await login(harness.client, "wrong password!")).status_code == 401
    throttled = await login(harness.client)  # even the right password now waits
    assert throttled.status_code == 429
    assert "Too many failed logins" in throttled.text


async def test_forms_without_the_csrf_token_are_refused(harness: Harness) -> None:
    await login(harness.client)
    refused = await harness.client.post("/admin/keys", data={"name": "sneaky"})
    assert refused.status_code == 403
    forged = await harness.client.post("/admin/keys", data={"name": "sneaky", "csrf": "guess"})
    assert forged.status_code == 403
    async with harness.app.state.services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(ApiKey)) == 0
    no_form_token = await harness.client.post("/admin/login", data={"password": ADMIN_PASSWORD})
    assert no_form_token.status_code == 403


async def test_logout_revokes_the_session_on_the_server(harness: Harness) -> None:
    await login(harness.client)
    cookie = harness.client.cookies.get("imagegate_admin")
    page = await harness.client.get("/admin")
    assert (await harness.client.post("/admin/logout", data={"csrf": csrf_of(page)})).status_code == 303
    harness.client.cookies.set("imagegate_admin", cookie or "", path="/admin")
    replay = await harness.client.get("/admin")
    assert replay.status_code == 303
    assert "/admin/login" in replay.headers["location"]


async def test_a_password_change_revokes_every_session(harness: Harness) -> None:
    await login(harness.client)
    assert (await harness.client.get("/admin")).status_code == 200
    await service.set_password(
        sessions=harness.app.state.services.sessions, password="a-brand-new-password", actor="cli"
    )
    assert (await harness.client.get("/admin")).status_code == 303
    assert (await login(harness.client)).status_code == 401
    assert (await login(harness.client, "a-brand-new-password")).status_code == 303


async def test_the_key_secret_is_shown_once(harness: Harness) -> None:
    await login(harness.client)
    page = await harness.client.get("/admin/keys")
    created = await harness.client.post(
        "/admin/keys",
        data={"csrf": csrf_of(page), "name": "laptop", "scopes": ["generate", "read"], "daily_quota": "9"},
    )
    assert created.status_code == 303
    shown = await harness.client.get("/admin/keys")
    token = re.search(r'id="new-key">(ig_[^<]+)<', shown.text)
    assert token is not None
    assert (await harness.client.get("/v1/usage", headers={"Authorization": f"Bearer {token[1]}"})).json()["today"][
        "limit"
    ] == 9
    webhook_secret = re.search(r'id="new-webhook-secret">(whsec_[^<]+)<', shown.text)
    assert webhook_secret is not None
    async with harness.app.state.services.sessions() as session:
        stored = await session.scalar(select(ApiKey.webhook_secret).where(ApiKey.name == "laptop"))
    assert stored == webhook_secret[1]
    again = await harness.client.get("/admin/keys")
    assert token[1] not in again.text
    assert webhook_secret[1] not in again.text
    assert "laptop" in again.text


async def test_admin_errors_are_pages_not_json(harness: Harness) -> None:
    await login(harness.client)
    missing = await harness.client.get("/admin/jobs/img_nothing")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    bad_date = await harness.client.get("/admin/history", params={"since": "yesterday"})
    assert bad_date.status_code == 400
    assert "YYYY-MM-DD" in bad_date.text


async def test_an_unknown_admin_page_is_a_404_that_keeps_the_navigation(harness: Harness) -> None:
    stranger = await harness.client.get("/admin/jobz")
    assert stranger.status_code == 404
    assert "Log out" not in stranger.text
    await login(harness.client)
    for method, path in (("GET", "/admin/jobz"), ("GET", "/admin/keys/a/b/c"), ("POST", "/admin/jobz")):
        missing = await harness.client.request(method, path)
        assert missing.status_code == 404, path
        assert missing.headers["content-type"].startswith("text/html")
        assert f"No such endpoint: {method} {path}." in missing.text
        assert "Log out" in missing.text  # the navigation, as on every other admin page
        assert 'href="/admin/history"' in missing.text
    wrong_method = await harness.client.get("/admin/logout")
    assert wrong_method.status_code == 405
    assert "Log out" in wrong_method.text


async def test_it_works_under_a_url_prefix(harness: Harness) -> None:
    # What uvicorn --root-path (imagegate serve with IMAGEGATE_ROOT_PATH) hands the app behind a proxy.
    transport = httpx2.ASGITransport(app=harness.app, root_path="/images")
    async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/images/admin/keys")
        assert response.headers["location"] == "/images/admin/login?next=/admin/keys"
        form = await client.get("/images/admin/login")
        assert 'href="/images/admin/static/admin.css"' in form.text
        assert "Path=/images/admin" in form.headers["set-cookie"]
        assert (await client.get("/images/admin/static/admin.css")).status_code == 200
        token = csrf_of(form)
        logged_in = await client.post("/images/admin/login", data={"csrf": token, "password": ADMIN_PASSWORD})
        assert logged_in.headers["location"] == "/images/admin"
        assert (await client.get("/images/admin/history")).status_code == 200


def test_set_password_from_the_command_line(database_url: str, tmp_path: object) -> None:
    env = {"IMAGEGATE_DATABASE_URL": database_url, "IMAGEGATE_DATA_DIR": str(tmp_path)}
    runner = CliRunner()
    short = runner.invoke(cli, ["admin", "set-password", "--password-stdin"], input="short\n", env=env)
    assert short.exit_code == 1
    assert "at least 12" in short.output
    done = runner.invoke(cli, ["admin", "set-password", "--password-stdin"], input="long enough password\n", env=env)
    assert done.exit_code == 0, done.output
    assert "logged out" in done.output


async def test_bad_key_forms_are_400_pages(harness: Harness) -> None:
    await login(harness.client)
    token = csrf_of(await harness.client.get("/admin/keys"))
    for form in (
        {"name": "x" * 201},
        {"name": "ok", "expires": "2027-13-45"},
        {"name": "ok", "daily_quota": "-3"},
        {"name": "ok", "scopes": ["fly"]},
    ):
        response = await harness.client.post("/admin/keys", data={"csrf": token, **form})
        assert response.status_code == 400, form
        assert response.headers["content-type"].startswith("text/html")
