"""The admin UI against hostile input and guessing: forms, throttling, the playground's limits, secrets, headers."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import select

from imagegate.admin.models import AdminSession
from imagegate.db import utcnow
from imagegate.keys.models import ApiKey
from imagegate.keys.service import KeyLimits
from imagegate.retention import sweep
from tests.fakes.server import base_env, serve
from tests.helpers import ADMIN_PASSWORD, Harness, csrf_of, login

NEW_KEY = re.compile(r'id="new-key">(ig_[^<]+)<')


async def logged_in_csrf(harness: Harness, path: str = "/admin/keys") -> str:
    """Log in and return the CSRF token of a page."""
    assert (await login(harness.client)).status_code == 303
    return csrf_of(await harness.client.get(path))


@pytest.mark.parametrize("value", ["²", "٣", "1" + "0" * 20, "1000000001", "4294967296"])
async def test_odd_numbers_in_key_forms_are_400_pages(harness: Harness, value: str) -> None:
    token = await logged_in_csrf(harness)
    created = await harness.client.post("/admin/keys", data={"csrf": token, "name": "n", "rate_limit": value})
    assert created.status_code == 400, created.text
    assert "whole number" in created.text
    _key, _token = await harness.new_key("existing")
    updated = await harness.client.post(
        f"/admin/keys/{_key.handle}", data={"csrf": token, "name": "n", "daily_quota": value}
    )
    assert updated.status_code == 400, updated.text


async def test_a_billion_is_still_a_limit(harness: Harness) -> None:
    token = await logged_in_csrf(harness)
    created = await harness.client.post("/admin/keys", data={"csrf": token, "name": "n", "rate_limit": "1000000000"})
    assert created.status_code == 303


@pytest.mark.parametrize("count", ["²", "1" + "0" * 20])
async def test_odd_numbers_in_the_playground_are_400_pages(harness: Harness, count: str) -> None:
    key, _token = await harness.new_key("player")
    token = await logged_in_csrf(harness, "/admin/playground")
    response = await harness.client.post(
        "/admin/playground", data={"csrf": token, "key": key.handle, "prompt": "a fox", "count": count}
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize(
    "path",
    ["/admin/jobs/img_%00x", "/admin/keys/key_%00", "/admin/history?cursor=img_%00", "/admin/history?q=%00"],
)
async def test_a_nul_in_an_admin_url_is_a_400_page(harness: Harness, path: str) -> None:
    await login(harness.client)
    response = await harness.client.get(path)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("text/html")


async def test_the_last_day_as_until_is_no_upper_bound(harness: Harness) -> None:
    await login(harness.client)
    assert (await harness.client.get("/admin/history", params={"until": "9999-12-31"})).status_code == 200


async def test_concurrent_wrong_passwords_cannot_pass_the_limit(harness: Harness) -> None:
    limit = harness.app.state.services.settings.admin_login_max_failures
    form = await harness.client.get("/admin/login")
    token = csrf_of(form)

    async def guess(n: int) -> int:
        data = {"csrf": token, "password": f"guess number {n}", "next": "/admin"}
        return (await harness.client.post("/admin/login", data=data)).status_code

    statuses = await asyncio.gather(*(guess(n) for n in range(4 * limit)))
    assert statuses.count(401) == limit, statuses
    assert statuses.count(429) == 3 * limit


async def test_a_right_password_does_not_use_up_the_budget(harness: Harness) -> None:
    for _ in range(2 * harness.app.state.services.settings.admin_login_max_failures):
        assert (await login(harness.client)).status_code == 303


async def test_a_long_client_address_is_counted_not_a_500(harness: Harness) -> None:
    transport = httpx2.ASGITransport(app=harness.app, client=("x" * 300, 1234))
    async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for _ in range(harness.app.state.services.settings.admin_login_max_failures):
            assert (await login(client, "wrong password!")).status_code == 401
        assert (await login(client)).status_code == 429


def test_forwarded_for_is_not_trusted_by_default(tmp_path: Path) -> None:
    env = base_env(
        IMAGEGATE_DATA_DIR=str(tmp_path / "data"),
        IMAGEGATE_ADMIN_PASSWORD=ADMIN_PASSWORD,
        IMAGEGATE_ADMIN_LOGIN_MAX_FAILURES="2",
    )
    with serve(env, tmp_path) as server, httpx2.Client(base_url=server.url) as client:
        statuses = []
        for n in range(4):
            token = csrf_of(client.get("/admin/login"))
            spoofed = {"X-Forwarded-For": f"203.0.113.{n}"}
            data = {"csrf": token, "password": "wrong password!"}
            statuses.append(client.post("/admin/login", data=data, headers=spoofed).status_code)
        assert statuses == [401, 401, 429, 429]


def test_forwarded_for_from_a_configured_proxy_names_the_client(tmp_path: Path) -> None:
    env = base_env(
        IMAGEGATE_DATA_DIR=str(tmp_path / "data"),
        IMAGEGATE_ADMIN_PASSWORD=ADMIN_PASSWORD,
        IMAGEGATE_ADMIN_LOGIN_MAX_FAILURES="2",
        IMAGEGATE_FORWARDED_ALLOW_IPS="127.0.0.1",
    )
    with serve(env, tmp_path) as server, httpx2.Client(base_url=server.url) as client:
        statuses = []
        for n in range(4):
            token = csrf_of(client.get("/admin/login"))
            forwarded = {"X-Forwarded-For": f"203.0.113.{n // 2}"}
            data = {"csrf": token, "password": "wrong password!"}
            statuses.append(client.post("/admin/login", data=data, headers=forwarded).status_code)
        assert statuses == [401, 401, 401, 401]
        token = csrf_of(client.get("/admin/login"))
        third = client.post(
            "/admin/login", data={"csrf": token, "password": "x"}, headers={"X-Forwarded-For": "203.0.113.0"}
        )
        assert third.status_code == 429


async def playground(harness: Harness, handle: str, prompt: str = "a fox") -> httpx2.Response:
    """Post the playground form as the key with this handle."""
    token = csrf_of(await harness.client.get("/admin/playground"))
    return await harness.client.post("/admin/playground", data={"csrf": token, "key": handle, "prompt": prompt})


async def test_the_playground_refuses_a_disabled_or_expired_key(harness: Harness) -> None:
    await login(harness.client)
    disabled, _token = await harness.new_key("off")
    expired, _token = await harness.new_key("old")
    async with harness.app.state.services.sessions() as session, session.begin():
        (await session.get(ApiKey, disabled.id)).enabled = False
        (await session.get(ApiKey, expired.id)).expires_at = utcnow() - timedelta(minutes=1)
    assert (await playground(harness, disabled.handle)).status_code == 403
    assert (await playground(harness, expired.handle)).status_code == 403
    listed = await harness.client.get("/admin/playground")
    assert disabled.handle not in listed.text
    assert expired.handle not in listed.text
    assert harness.fake.requests == []


async def test_the_playground_counts_against_the_keys_rate_limit(harness: Harness) -> None:
    await login(harness.client)
    key, _token = await harness.new_key("slow", limits=KeyLimits(rate_limit_per_minute=2))
    assert (await playground(harness, key.handle)).status_code == 303
    assert (await playground(harness, key.handle)).status_code == 303
    refused = await playground(harness, key.handle)
    assert refused.status_code == 429
    assert "retry in" in refused.text


async def test_a_new_keys_secret_leaves_the_database_on_first_read(harness: Harness) -> None:
    token = await logged_in_csrf(harness)
    assert (await harness.client.post("/admin/keys", data={"csrf": token, "name": "laptop"})).status_code == 303
    # The next page is not the keys page: the secret is dropped, never kept for later.
    assert NEW_KEY.search((await harness.client.get("/admin/history")).text) is None
    async with harness.app.state.services.sessions() as session:
        flashes = (await session.scalars(select(AdminSession.flash))).all()
    assert flashes == [None]
    assert NEW_KEY.search((await harness.client.get("/admin/keys")).text) is None


async def test_a_new_keys_secret_is_shown_on_the_keys_page_once(harness: Harness) -> None:
    token = await logged_in_csrf(harness)
    created = await harness.client.post("/admin/keys", data={"csrf": token, "name": "laptop"}, follow_redirects=True)
    assert NEW_KEY.search(created.text) is not None
    async with harness.app.state.services.sessions() as session:
        assert (await session.scalars(select(AdminSession.flash))).all() == [None]


async def test_an_expired_sessions_secret_is_deleted(harness: Harness) -> None:
    token = await logged_in_csrf(harness)
    assert (await harness.client.post("/admin/keys", data={"csrf": token, "name": "laptop"})).status_code == 303
    async with harness.app.state.services.sessions() as session:
        assert (await session.scalar(select(AdminSession.flash))) is not None
    state = harness.app.state.services
    later = utcnow() + timedelta(hours=state.settings.admin_session_hours + 1)
    await sweep(sessions=state.sessions, storage=state.storage, settings=state.settings, now=later)
    async with harness.app.state.services.sessions() as session:
        assert (await session.scalars(select(AdminSession))).all() == []


async def test_an_expired_session_is_deleted_when_it_is_presented(harness: Harness) -> None:
    token = await logged_in_csrf(harness)
    assert (await harness.client.post("/admin/keys", data={"csrf": token, "name": "laptop"})).status_code == 303
    async with harness.app.state.services.sessions() as session, session.begin():
        row = await session.scalar(select(AdminSession))
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
    assert (await harness.client.get("/admin/keys")).status_code == 303
    async with harness.app.state.services.sessions() as session:
        assert (await session.scalars(select(AdminSession))).all() == []


@pytest.mark.parametrize("path", ["/admin/login", "/admin", "/admin/keys", "/admin/jobs/img_none", "/admin/history"])
async def test_admin_pages_are_uncacheable_unframeable_and_without_inline_script(harness: Harness, path: str) -> None:
    await login(harness.client)
    response = await harness.client.get(path)
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert "default-src 'none'" in policy
    assert "script-src 'self';" in policy  # the static admin.js only: no inline script, no other origin
    assert "unsafe" not in policy
    assert "<script>" not in response.text  # no inline script on the page


async def test_the_stylesheet_and_the_api_keep_their_own_caching(harness: Harness) -> None:
    css = await harness.client.get("/admin/static/admin.css")
    assert "content-security-policy" not in css.headers
    assert (await harness.client.get("/health")).headers.get("x-frame-options") is None
