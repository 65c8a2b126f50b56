"""The Images calls on the pooled HTTP client: what they send, how they retry and fail, and that the SDK stays out."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagegate.backends.base import BackendRequest, JobReporter, Operation
from imagegate.backends.openai import OpenAIBackend
from imagegate.backends.openai_errors import status_error
from imagegate.backends.openai_http import retry_delay, should_retry
from imagegate.errors import (
    BackendError,
    ContentRejected,
    ImagegateError,
    UpstreamCredentialsRejected,
    UpstreamRateLimited,
    UpstreamRejected,
)
from imagegate.settings import Settings
from tests.fakes.openai_upstream import FakeOpenAI, running_fake_openai

SECRET = "sk-test-secret"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    """The fake OpenAI server, for this module."""
    with running_fake_openai() as fake:
        yield fake


@pytest.fixture
def fresh(upstream: FakeOpenAI) -> FakeOpenAI:
    """The fake with no request recorded yet."""
    upstream.requests.clear()
    return upstream


def backend_for(upstream: FakeOpenAI, tmp_path: Path, **options: Any) -> OpenAIBackend:
    """An OpenAI backend pointed at the fake, without retries unless asked."""
    defaults = {"base_url": f"{upstream.url}/v1", "api_key": SECRET, "timeout_seconds": 10, "max_retries": 0}
    return OpenAIBackend(name="openai", options={**defaults, **options}, settings=Settings(data_dir=tmp_path))


def generation(prompt: str) -> BackendRequest:
    """One gpt-image-1 generation of a square image."""
    return BackendRequest(
        model="gpt-image-1",
        prompt=prompt,
        operation=Operation.GENERATE,
        width=1024,
        height=1024,
        quality="auto",
        output_format="png",
        count=1,
        size="1024x1024",
        job_id="img_test",
    )


async def test_a_generation_is_one_request_on_the_pooled_client_without_the_sdks_per_call_work(
    fresh: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = backend_for(fresh, tmp_path)
    sdk_requests: list[object] = []
    monkeypatch.setattr(backend.client, "request", lambda *args, **kwargs: sdk_requests.append(args))
    result = await backend.generate(generation("a fox"), JobReporter(4096))
    await backend.aclose()
    assert len(result.images) == 1
    assert result.images[0].data.startswith(b"\x89PNG")
    assert result.metadata == {
        "revised_prompt": "a fox (revised)",
        "usage": {
            "input_tokens": 10,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": 10},
            "output_tokens": 100,
            "total_tokens": 110,
        },
    }
    assert sdk_requests == []
    (call,) = fresh.requests
    assert call.authorization == f"Bearer {SECRET}"
    assert call.headers["user-agent"].startswith("AsyncOpenAI/Python ")  # as the SDK identifies itself
    sent = {"prompt": "a fox", "model": "gpt-image-1", "n": 1, "size": "1024x1024", "output_format": "png"}
    assert call.fields == sent


async def test_the_organization_and_project_go_with_every_call(fresh: FakeOpenAI, tmp_path: Path) -> None:
    backend = backend_for(fresh, tmp_path, organization="org-1", project="proj-1")
    await backend.generate(generation("a fox"), JobReporter(4096))
    await backend.aclose()
    (call,) = fresh.requests
    assert (call.headers["openai-organization"], call.headers["openai-project"]) == ("org-1", "proj-1")


@pytest.mark.parametrize("deployment", [None, "images"])
async def test_azure_calls_the_deployment_with_its_api_version_and_key(
    fresh: FakeOpenAI, tmp_path: Path, deployment: str | None
) -> None:
    azure = {"azure_endpoint": fresh.url, "azure_api_version": "2025-04-01", "azure_deployment": deployment}
    backend = backend_for(fresh, tmp_path, base_url=None, **azure)
    await backend.generate(generation("a fox"), JobReporter(4096))
    await backend.aclose()
    (call,) = fresh.requests
    assert call.path == f"/openai/deployments/{deployment or 'gpt-image-1'}/images/generations"
    assert call.query == {"api-version": "2025-04-01"}
    assert call.headers["api-key"] == SECRET
    assert call.authorization == ""


async def test_a_failed_call_is_tried_again_while_retries_are_left(fresh: FakeOpenAI, tmp_path: Path) -> None:
    backend = backend_for(fresh, tmp_path, max_retries=1)
    result = await backend.generate(generation("flaky once"), JobReporter(4096))
    await backend.aclose()
    assert len(result.images) == 1
    assert len(fresh.requests) == 2


@pytest.mark.parametrize(("prompt", "retries"), [("flaky without retries", 0), ("flaky final", 2)])
async def test_without_a_retry_the_providers_failure_is_a_backend_error(
    fresh: FakeOpenAI, tmp_path: Path, prompt: str, retries: int
) -> None:
    backend = backend_for(fresh, tmp_path, max_retries=retries)
    with pytest.raises(BackendError, match="HTTP 500"):
        await backend.generate(generation(prompt), JobReporter(4096))
    await backend.aclose()
    assert len(fresh.requests) == 1  # 'final' says x-should-retry: false, which is obeyed


def test_the_retry_delay_follows_the_provider_then_backs_off_with_jitter() -> None:
    assert retry_delay(0, {"retry-after-ms": "250"}) == 0.25
    assert retry_delay(0, {"retry-after": "3"}) == 3.0
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 < retry_delay(0, {"retry-after": in_ten}) <= 10
    for retries, most in [(0, 0.5), (1, 1.0), (2, 2.0), (5, 8.0), (50, 8.0)]:
        for headers in (None, {}, {"retry-after": "500"}, {"retry-after": "soon"}):
            assert 0.75 * most <= retry_delay(retries, headers) <= most


@pytest.mark.parametrize(
    ("status", "headers", "retried"),
    [
        (500, {}, True),
        (503, {}, True),
        (429, {}, True),
        (408, {}, True),
        (409, {}, True),
        (400, {}, False),
        (401, {}, False),
        (404, {}, False),
        (500, {"x-should-retry": "false"}, False),
        (400, {"x-should-retry": "true"}, True),
        (429, {"retry-after": "121"}, False),
    ],
)
def test_which_answers_are_retried(status: int, headers: dict[str, str], retried: bool) -> None:
    assert should_retry(status, headers) is retried


MODERATED = b'{"error": {"message": "Rejected by the safety system.", "code": "moderation_blocked"}}'


@pytest.mark.parametrize(
    ("status", "headers", "body", "kind", "message"),
    [
        (429, {"retry-after": "7"}, b"{}", UpstreamRateLimited, "rate limiting"),
        (401, {}, b'{"error": {"message": "Incorrect API key sk-t***"}}', UpstreamCredentialsRejected, "operator"),
        (403, {}, b"", UpstreamCredentialsRejected, "operator"),
        (400, {}, MODERATED, ContentRejected, "Rejected by the safety system."),
        (400, {}, b'{"error": {"message": "size is wrong"}}', UpstreamRejected, "request: size is wrong"),
        (400, {}, b"not json", UpstreamRejected, "request: Error code: 400"),
        (502, {}, b"<html>", BackendError, "HTTP 502"),
        (404, {}, b'{"error": {"message": "no such route"}}', BackendError, "answered unexpectedly"),
    ],
)
def test_an_error_answer_maps_as_the_sdks_error_for_it_does(
    status: int, headers: dict[str, str], body: bytes, kind: type[ImagegateError], message: str
) -> None:
    error = status_error(status, headers, body)
    assert type(error) is kind
    assert message in error.message
    assert "sk-" not in error.message


def test_a_rate_limit_passes_its_retry_after_on_or_twenty_seconds_without_one() -> None:
    assert status_error(429, {"retry-after": "7"}, b"").headers == {"Retry-After": "7"}
    assert status_error(429, {}, b"").headers == {"Retry-After": "20"}
    assert status_error(400, {}, MODERATED).code == "moderation_blocked"
