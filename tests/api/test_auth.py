"""Bearer authentication: 401 for missing or unknown keys, 403 for disabled or expired ones."""

from __future__ import annotations

from datetime import timedelta

import pytest

from imagegate.db import utcnow
from imagegate.keys import service as keys
from tests.helpers import Harness

JOBS = "/v1/images/jobs"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing_api_key"),
        ({"Authorization": "Bearer "}, "missing_api_key"),
        ({"Authorization": "Bearer ig_not-a-real-key"}, "invalid_api_key"),
    ],
)
async def test_missing_or_unknown_key_is_401(harness: Harness, headers: dict[str, str], code: str) -> None:
    response = await harness.client.get(JOBS, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_disabled_key_is_403_until_enabled(harness: Harness) -> None:
    key, token = await harness.new_key()
    async with harness.app.state.services.sessions() as session, session.begin():
        await keys.set_enabled(session=session, handle=key.handle, enabled=False)
    response = await harness.client.get(JOBS, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "key_disabled"
    assert key.handle in response.json()["error"]["message"]
    async with harness.app.state.services.sessions() as session, session.begin():
        await keys.set_enabled(session=session, handle=key.handle, enabled=True)
    assert (await harness.client.get(JOBS, headers={"Authorization": f"Bearer {token}"})).status_code == 200


async def test_expired_key_is_403(harness: Harness) -> None:
    _key, token = await harness.new_key(expires_at=utcnow() - timedelta(seconds=1))
    response = await harness.client.get(JOBS, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "key_expired"


async def test_deleted_key_is_401(harness: Harness) -> None:
    key, token = await harness.new_key()
    async with harness.app.state.services.sessions() as session, session.begin():
        await keys.delete_key(session=session, handle=key.handle)
    response = await harness.client.get(JOBS, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
