"""Key tokens, hashes and handles; deleting a key keeps its jobs."""

from __future__ import annotations

from sqlalchemy import select

from imagegate.jobs.models import Job
from imagegate.keys import service as keys
from imagegate.keys.models import ApiKey
from tests.helpers import Harness


async def test_tokens_are_random_and_stored_only_as_a_hash(harness: Harness) -> None:
    key, token = await harness.new_key("ci")
    _other, other_token = await harness.new_key("ci")
    assert token.startswith("ig_")
    assert len(token) >= 3 + 43
    assert token != other_token
    async with harness.app.state.services.sessions() as session:
        stored = await session.scalar(select(ApiKey).where(ApiKey.id == key.id))
    assert stored is not None
    assert stored.token_hash == keys.hash_token(token) != token
    secret = token.removeprefix("ig_")
    assert not any(secret[i : i + 4] in stored.handle for i in range(len(secret) - 3))


async def test_verify_records_last_use(harness: Harness) -> None:
    key, token = await harness.new_key()
    assert key.last_used_at is None
    async with harness.app.state.services.sessions() as session, session.begin():
        verified = await keys.verify(session=session, token=token)
    assert verified.id == key.id
    assert verified.last_used_at is not None


async def test_deleting_a_key_keeps_its_jobs_marked_with_the_handle(harness: Harness) -> None:
    key, token = await harness.new_key()
    response = await harness.client.post(
        "/v1/images/generate", json={"prompt": "keep me"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200
    async with harness.app.state.services.sessions() as session, session.begin():
        await keys.delete_key(session=session, handle=key.handle)
    async with harness.app.state.services.sessions() as session:
        job = await session.scalar(select(Job).where(Job.id == response.json()["id"]))
    assert job is not None
    assert job.key_id is None
    assert job.key_handle == key.handle
    assert job.status == "succeeded"
