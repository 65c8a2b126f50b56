"""Rotation: a new secret, the old one valid for the grace period, then refused."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from imagegate.db import utcnow
from imagegate.keys import service as keys
from imagegate.keys.models import ApiKey, AuditEvent
from tests.helpers import Harness, HarnessFactory

JOBS = "/v1/images/jobs"


def bearer(token: str) -> dict[str, str]:
    """Authorization headers."""
    return {"Authorization": f"Bearer {token}"}


async def test_old_secret_works_during_the_grace_period_then_stops(harness_with: HarnessFactory) -> None:
    # The grace period is ended behind the key verbs' back: no cached key may answer for the row.
    async with harness_with(key_cache_seconds=0) as harness:
        await _grace_then_refused(harness)


async def _grace_then_refused(harness: Harness) -> None:
    key, old = await harness.new_key()
    async with harness.app.state.services.sessions() as session, session.begin():
        _key, new = await keys.rotate_key(session=session, handle=key.handle, grace=timedelta(hours=1))
    assert new != old
    assert (await harness.client.get(JOBS, headers=bearer(old))).status_code == 200
    assert (await harness.client.get(JOBS, headers=bearer(new))).status_code == 200
    async with harness.app.state.services.sessions() as session, session.begin():
        await session.execute(
            update(ApiKey).where(ApiKey.id == key.id).values(previous_token_expires_at=utcnow() - timedelta(seconds=1))
        )
    refused = await harness.client.get(JOBS, headers=bearer(old))
    assert refused.status_code == 401
    assert "rotation" in refused.json()["error"]["message"]
    assert (await harness.client.get(JOBS, headers=bearer(new))).status_code == 200


async def test_rotation_without_grace_stops_the_old_secret_at_once(harness: Harness) -> None:
    key, old = await harness.new_key()
    async with harness.app.state.services.sessions() as session, session.begin():
        _key, new = await keys.rotate_key(session=session, handle=key.handle, grace=timedelta(0))
    assert (await harness.client.get(JOBS, headers=bearer(old))).status_code == 401
    assert (await harness.client.get(JOBS, headers=bearer(new))).status_code == 200


async def test_a_second_rotation_ends_the_first_secret(harness: Harness) -> None:
    key, first = await harness.new_key()
    async with harness.app.state.services.sessions() as session, session.begin():
        _key, second = await keys.rotate_key(session=session, handle=key.handle, grace=timedelta(hours=1))
        _key, third = await keys.rotate_key(session=session, handle=key.handle, grace=timedelta(hours=1))
    assert (await harness.client.get(JOBS, headers=bearer(first))).status_code == 401
    assert (await harness.client.get(JOBS, headers=bearer(second))).status_code == 200
    assert (await harness.client.get(JOBS, headers=bearer(third))).status_code == 200


async def test_every_key_change_is_audited_without_secrets(harness: Harness) -> None:
    async with harness.app.state.services.sessions() as session, session.begin():
        key, token = await keys.create_key(session=session, name="audited", actor="admin")
        await keys.update_key(session=session, handle=key.handle, limits=keys.KeyLimits(daily_image_quota=5))
        _key, rotated = await keys.rotate_key(session=session, handle=key.handle, grace=timedelta(0), actor="api")
        await keys.set_enabled(session=session, handle=key.handle, enabled=False)
        await keys.set_enabled(session=session, handle=key.handle, enabled=True)
        await keys.delete_key(session=session, handle=key.handle)
    async with harness.app.state.services.sessions() as session:
        events = (
            await session.scalars(
                select(AuditEvent).where(AuditEvent.action.startswith("key.")).order_by(AuditEvent.id)
            )
        ).all()
    assert [(e.action, e.actor) for e in events] == [
        ("key.create", "admin"),
        ("key.update", "cli"),
        ("key.rotate", "api"),
        ("key.disable", "cli"),
        ("key.enable", "cli"),
        ("key.delete", "cli"),
    ]
    assert all(e.key_handle == key.handle for e in events)
    assert events[1].detail == {"daily_image_quota": 5}
    dump = repr([(e.detail, e.action) for e in events])
    assert token not in dump
    assert rotated not in dump
    assert "ig_" not in dump
