"""Signed webhooks: delivered in order and verifiable, retried, refused for internal addresses, on every surface."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from imagegate import retention
from imagegate.db import utcnow
from imagegate.jobs.models import Job
from imagegate.webhooks.models import DeliveryState, WebhookAttempt, WebhookDelivery
from imagegate.webhooks.service import new_secret
from imagegate.webhooks.targets import is_public
from tests.fakes.receiver import Receiver, receiver
from tests.helpers import Harness, HarnessFactory, fake_backends, login, oig_client

GENERATE = "/v1/images/generate"
ASYNC = {"Prefer": "respond-async"}
FAST_RETRIES = {"webhook_allow_private": True, "webhook_retry_initial_seconds": 0.05}


@pytest.fixture
def hook() -> Iterator[Receiver]:
    """A loopback receiver."""
    with receiver() as running:
        yield running


async def key_with_secret(harness: Harness) -> tuple[dict[str, str], str]:
    """Authorization headers for a new key, and the key's webhook secret."""
    key, token = await harness.new_key()
    assert key.webhook_secret is not None
    assert key.webhook_secret.startswith("whsec_")
    return {"Authorization": f"Bearer {token}"}, key.webhook_secret


async def arrived(hook: Receiver, count: int) -> list[Any]:
    """The first `count` deliveries, waited for off the event loop (the app sends from it)."""
    return await asyncio.to_thread(hook.wait_for, count)


async def test_every_asked_event_arrives_in_order_signed_with_the_keys_secret(
    harness_with: HarnessFactory, hook: Receiver
) -> None:
    async with harness_with(**FAST_RETRIES) as harness:
        auth, secret = await key_with_secret(harness)
        body = {"prompt": "a fox", "webhook_url": hook.url, "webhook_events": ["queued", "running", "succeeded"]}
        response = await harness.client.post(GENERATE, json=body, headers=auth)
        assert response.status_code == 200, response.text
        job_id = response.json()["id"]
        deliveries = await arrived(hook, 3)
        payloads = [item.verified(secret) for item in deliveries]
        assert [p["type"] for p in payloads] == ["image.job.queued", "image.job.running", "image.job.succeeded"]
        assert [p["data"]["status"] for p in payloads] == ["queued", "running", "succeeded"]
        assert {p["data"]["id"] for p in payloads} == {job_id}
        assert payloads[2]["data"]["images"][0]["url"].startswith("http://testserver/generated/")
        assert deliveries[0].headers["webhook-signature"].startswith("v1,")
        assert len({item.headers["webhook-id"] for item in deliveries}) == 3
        with pytest.raises(WebhookVerificationError):
            Webhook(new_secret()).verify(deliveries[0].body, deliveries[0].headers)
        shown = await poll_webhooks(harness, job_id, auth, lambda hooks: all(h["status"] == "delivered" for h in hooks))
        assert [h["event"] for h in shown] == ["queued", "running", "succeeded"]
        assert all(h["attempts"][0]["status_code"] == 200 for h in shown)
        assert all(isinstance(h["attempts"][0]["latency_ms"], int) for h in shown)


async def poll_webhooks(harness: Harness, job_id: str, auth: dict[str, str], done: Any) -> list[dict[str, Any]]:
    """The job's webhook deliveries once done(deliveries) holds (the sender records after the receiver answers)."""
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        shown: list[dict[str, Any]] = (await harness.client.get(f"/v1/images/jobs/{job_id}", headers=auth)).json()[
            "webhooks"
        ]
        if done(shown) or asyncio.get_running_loop().time() > deadline:
            return shown
        await asyncio.sleep(0.05)


async def test_the_default_events_are_the_final_ones(harness_with: HarnessFactory, hook: Receiver) -> None:
    async with harness_with(**FAST_RETRIES) as harness:
        auth, secret = await key_with_secret(harness)
        failed = await harness.client.post(GENERATE, json={"prompt": "fail: no", "webhook_url": hook.url}, headers=auth)
        assert failed.status_code == 502
        (delivery,) = await arrived(hook, 1)
        payload = delivery.verified(secret)
        assert payload["type"] == "image.job.failed"
        assert payload["data"]["status"] == "failed"


async def test_a_500_is_retried_with_the_same_webhook_id(harness_with: HarnessFactory, hook: Receiver) -> None:
    hook.statuses = [500, 503]
    async with harness_with(**FAST_RETRIES) as harness:
        auth, secret = await key_with_secret(harness)
        response = await harness.client.post(GENERATE, json={"prompt": "x", "webhook_url": hook.url}, headers=auth)
        deliveries = await arrived(hook, 3)
        assert len({item.headers["webhook-id"] for item in deliveries}) == 1
        assert deliveries[2].verified(secret)["data"]["status"] == "succeeded"
        shown = await poll_webhooks(harness, response.json()["id"], auth, lambda h: h[0]["status"] == "delivered")
        assert [a["status_code"] for a in shown[0]["attempts"]] == [500, 503, 200]
        assert shown[0]["attempts"][0]["error"] == "answered 500"
        await login(harness.client)
        admin_page = (await harness.client.get(f"/admin/jobs/{response.json()['id']}")).text
        assert "Webhooks" in admin_page
        assert hook.url in admin_page
        assert admin_page.count(shown[0]["id"]) == 3
        assert "answered 503" in admin_page


async def test_a_redirect_is_not_followed_and_counts_as_a_failure(harness_with: HarnessFactory, hook: Receiver) -> None:
    hook.statuses = [302]
    async with harness_with(**FAST_RETRIES) as harness:
        auth, _secret = await key_with_secret(harness)
        response = await harness.client.post(GENERATE, json={"prompt": "x", "webhook_url": hook.url}, headers=auth)
        await arrived(hook, 2)
        shown = await poll_webhooks(harness, response.json()["id"], auth, lambda h: h[0]["status"] == "delivered")
        assert [a["status_code"] for a in shown[0]["attempts"]] == [302, 200]
        assert shown[0]["attempts"][0]["error"] == "redirects are not followed"


async def test_giving_up_after_the_retry_window(harness_with: HarnessFactory, hook: Receiver) -> None:
    hook.statuses = [500] * 100
    async with harness_with(**FAST_RETRIES, webhook_retry_hours=0.5 / 3600) as harness:
        auth, _secret = await key_with_secret(harness)
        response = await harness.client.post(GENERATE, json={"prompt": "x", "webhook_url": hook.url}, headers=auth)
        shown = await poll_webhooks(harness, response.json()["id"], auth, lambda h: h[0]["status"] == "failed")
        assert shown[0]["status"] == "failed"
        assert shown[0]["next_attempt_at"] is None
        # How many tries fit in the half second depends on the machine; at least the first was made and logged.
        assert shown[0]["attempts"]
        assert all(attempt["status_code"] == 500 for attempt in shown[0]["attempts"])


async def test_the_header_asks_for_webhooks_on_the_openai_surface(harness_with: HarnessFactory, hook: Receiver) -> None:
    async with harness_with(**FAST_RETRIES) as harness:
        auth, secret = await key_with_secret(harness)
        headers = {**auth, "Imagegate-Webhook-Url": hook.url, "Imagegate-Webhook-Events": "running,succeeded"}
        response = await harness.client.post("/v1/images/generations", json={"prompt": "x"}, headers=headers)
        assert response.status_code == 200, response.text
        deliveries = await arrived(hook, 2)
        assert [d.verified(secret)["type"] for d in deliveries] == ["image.job.running", "image.job.succeeded"]


async def test_the_async_submit_takes_webhook_fields_like_generate(
    harness_with: HarnessFactory, hook: Receiver
) -> None:
    async with harness_with(**FAST_RETRIES) as harness:
        auth, secret = await key_with_secret(harness)
        body = {"prompt": "x", "webhook_url": hook.url, "webhook_events": ["queued", "succeeded"]}
        response = await harness.client.post("/v1/images/jobs", json=body, headers=auth)
        assert response.status_code == 202, response.text
        deliveries = await arrived(hook, 2)
        assert [d.verified(secret)["type"] for d in deliveries] == ["image.job.queued", "image.job.succeeded"]
        assert deliveries[1].verified(secret)["data"]["id"] == response.json()["id"]
        refused = await harness.client.post(
            "/v1/images/jobs", json={"prompt": "x", "webhook_url": hook.url, "webhook_events": "done"}, headers=auth
        )
        assert refused.status_code == 400


ORIGINAL = {"models": {"dall-e-3": "fake"}, "default_model": "dall-e-3"}


async def test_the_header_asks_for_webhooks_on_the_openai_image_gen_surface_on_both_listeners(
    harness_with: HarnessFactory, hook: Receiver
) -> None:
    async with harness_with(**FAST_RETRIES, **ORIGINAL) as harness:
        auth, secret = await key_with_secret(harness)
        headers = {**auth, "Imagegate-Webhook-Url": hook.url, "Content-Type": "application/json"}
        body = json.dumps({"prompt": "a cat"})
        main = await harness.client.post("/generate", content=body, headers=headers)
        assert main.status_code == 200, main.text
        (first,) = await arrived(hook, 1)
        assert first.verified(secret)["data"]["images"][0]["url"].startswith("http://testserver/generated/")
        async with oig_client(harness) as second_listener:
            second = await second_listener.post("/generate", content=body, headers=headers)
        assert second.status_code == 200, second.text
        deliveries = await arrived(hook, 2)
        payload = deliveries[1].verified(secret)
        assert payload["type"] == "image.job.succeeded"
        # The links are the native API's, served on the main listener's port.
        port = harness.app.state.services.settings.port
        assert payload["data"]["status_url"].startswith(f"http://oig:{port}/v1/images/jobs/img_")


async def test_a_cancelled_queued_job_sends_cancelled(harness_with: HarnessFactory, hook: Receiver) -> None:
    async with harness_with(**FAST_RETRIES, backends=_one_slot()) as harness:
        auth, secret = await key_with_secret(harness)
        first = await harness.client.post(GENERATE, json={"prompt": "gate:a"}, headers={**auth, **ASYNC})
        await harness.fake.wait_started(1)
        queued = await harness.client.post(
            GENERATE, json={"prompt": "gate:b", "webhook_url": hook.url}, headers={**auth, **ASYNC}
        )
        cancelled = await harness.client.post(f"/v1/images/jobs/{queued.json()['id']}/cancel", headers=auth)
        assert cancelled.json()["status"] == "cancelled"
        (delivery,) = await arrived(hook, 1)
        assert delivery.verified(secret)["data"]["status"] == "cancelled"
        harness.fake.open("gate:a")
        assert first.status_code == 202


def _one_slot() -> Any:

    return fake_backends(concurrency=1)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:9/hook", "internal address"),
        ("http://localhost/hook", "internal address"),
        ("http://10.1.2.3/hook", "internal address"),
        ("http://169.254.169.254/latest/meta-data", "internal address"),
        ("http://[::1]/hook", "internal address"),
        ("http://[::ffff:192.168.0.1]/hook", "internal address"),
        ("ftp://example.com/hook", "http:// or https://"),
        ("https://user:pw@example.com/hook", "user name or password"),
        ("not a url", "http:// or https://"),
    ],
)
async def test_unsafe_destinations_are_refused_at_submit(harness: Harness, url: str, expected: str) -> None:
    auth = await harness.auth()
    response = await harness.client.post(GENERATE, json={"prompt": "x", "webhook_url": url}, headers=auth)
    assert response.status_code == 400, response.text
    assert expected in json.dumps(response.json())
    header = await harness.client.post(
        "/v1/images/generations", json={"prompt": "x"}, headers={**auth, "Imagegate-Webhook-Url": url}
    )
    assert header.status_code == 400
    assert expected in header.json()["error"]["message"]
    legacy = await harness.client.post(
        "/generate", json={"prompt": "x", "model": "fake-model"}, headers={**auth, "Imagegate-Webhook-Url": url}
    )
    assert legacy.status_code == 400, legacy.text
    assert expected in legacy.json()["error"]


async def test_unknown_events_are_a_400(harness: Harness) -> None:
    body = {"prompt": "x", "webhook_url": "https://example.com/h", "webhook_events": ["done"]}
    response = await harness.client.post(GENERATE, json=body, headers=await harness.auth())
    assert response.status_code == 400
    assert "Unknown webhook event(s): done" in response.text


async def test_an_address_that_turned_private_is_refused_at_send_time(
    harness_with: HarnessFactory, hook: Receiver
) -> None:
    async with harness_with(**FAST_RETRIES, webhook_retry_hours=0.3 / 3600) as harness:
        auth, _secret = await key_with_secret(harness)
        response = await harness.client.post(
            GENERATE, json={"prompt": "gate:rebind", "webhook_url": hook.url}, headers={**auth, **ASYNC}
        )
        await harness.fake.wait_started(1)
        harness.app.state.services.settings.webhook_allow_private = False  # as if the name now pointed inside
        harness.fake.open("gate:rebind")
        shown = await poll_webhooks(harness, response.json()["id"], auth, lambda h: h and h[0]["status"] == "failed")
        assert "internal address" in shown[0]["attempts"][0]["error"]
        assert hook.received == []


def test_public_and_internal_addresses() -> None:
    assert is_public("93.184.216.34")
    assert is_public("2606:2800:220:1:248:1893:25c8:1946")
    for address in ("127.0.0.1", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "::1"):
        assert not is_public(address), address
    assert not is_public("fe80::1%eth0")
    assert not is_public("0.0.0.0")  # noqa: S104 - an address under test, not a bind
    assert not is_public("224.0.0.1")


async def test_retention_forgets_the_deliveries_of_expired_jobs_once_they_are_settled(
    harness_with: HarnessFactory, hook: Receiver
) -> None:
    hook.statuses = [200, 500]
    async with harness_with(webhook_allow_private=True, webhook_retry_initial_seconds=3600) as harness:
        auth, _secret = await key_with_secret(harness)
        jobs = []
        for _ in range(2):
            response = await harness.client.post(GENERATE, json={"prompt": "x", "webhook_url": hook.url}, headers=auth)
            jobs.append(response.json()["id"])
            await poll_webhooks(harness, jobs[-1], auth, lambda h: h and h[0]["attempts"])
        sessions = harness.app.state.services.sessions
        async with sessions() as session, session.begin():
            past = utcnow() - timedelta(days=1)
            await session.execute(update(Job).where(Job.id.in_(jobs)).values(expires_at=past))

        async def sweep_and_count() -> tuple[dict[str, str], int]:
            await retention.sweep(
                sessions=sessions,
                storage=harness.app.state.services.storage,
                settings=harness.app.state.services.settings,
            )
            async with sessions() as session:
                rows = (await session.execute(select(WebhookDelivery.job_id, WebhookDelivery.state))).all()
                attempts = await session.scalar(select(func.count()).select_from(WebhookAttempt))
            return {row.job_id: row.state for row in rows}, attempts or 0

        # The delivered one goes with its attempt; the one still retrying stays, whatever the job's retention.
        assert await sweep_and_count() == ({jobs[1]: DeliveryState.PENDING}, 1)
        async with sessions() as session, session.begin():
            await session.execute(update(WebhookDelivery).values(state=DeliveryState.FAILED))
        assert await sweep_and_count() == ({}, 0)
