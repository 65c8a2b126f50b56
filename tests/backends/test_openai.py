"""The OpenAI backend end to end: the app calls a fake OpenAI server on loopback, through each surface."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from openai import AsyncOpenAI
from sqlalchemy import select

from imagegate import app as app_module
from imagegate.backends.openai import OpenAIBackend
from imagegate.jobs.models import Job
from imagegate.settings import BackendConfig, Settings
from imagegate.storage import LocalStorage
from tests.fakes.backends import tiny_png
from tests.fakes.openai_upstream import FakeOpenAI, running_fake_openai
from tests.helpers import Harness, HarnessFactory, fake_backends, start

SECRET = "sk-test-secret"
MODELS = {
    "fake-model": "fake",
    "demo": "demo",
    "gpt-image-1": "openai",
    "dall-e-2": "openai",
    "dall-e-3": "openai",
    "local-model": "openai",
}


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeOpenAI]:
    """The fake OpenAI server, for the whole run."""
    with running_fake_openai() as fake:
        yield fake


def openai_settings(upstream: FakeOpenAI, **options: Any) -> dict[str, Any]:
    """Settings overrides that add an 'openai' backend pointed at the fake."""
    backend = BackendConfig(
        type="openai",
        concurrency=4,
        options={
            "base_url": f"{upstream.url}/v1",
            "api_key": SECRET,
            # Generous, so a loaded machine never turns an answer into a timeout; the timeout test sets its own.
            "timeout_seconds": 10,
            "max_retries": 0,
            **options,
        },
    )
    return {"backends": {**fake_backends(), "openai": backend}, "models": MODELS}


@pytest.fixture
async def gate(harness_with: HarnessFactory, upstream: FakeOpenAI) -> AsyncIterator[Harness]:
    """The app with the OpenAI backend."""
    upstream.requests.clear()
    async with harness_with(**openai_settings(upstream, max_download_bytes=1024 * 1024)) as running:
        yield running


@pytest.fixture
async def sdk(gate: Harness) -> AsyncIterator[AsyncOpenAI]:
    """The official SDK as ImageGate's caller."""
    _key, token = await gate.new_key("sdk")
    client = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=gate.app), base_url="http://testserver")
    async with AsyncOpenAI(base_url="http://testserver/v1", api_key=token, http_client=client, max_retries=0) as api:
        yield api


async def test_gpt_image_generation_records_usage_and_revised_prompt(
    sdk: AsyncOpenAI, upstream: FakeOpenAI, gate: Harness
) -> None:
    result = await sdk.images.generate(
        model="gpt-image-1",
        prompt="a fox",
        size="1536x1024",
        quality="low",
        n=2,
        background="opaque",
        output_format="webp",
    )
    assert result.data is not None
    assert len(result.data) == 2
    assert result.data[0].revised_prompt == "a fox (revised)"
    assert result.usage is not None
    assert result.usage.total_tokens == 110
    (call,) = upstream.requests
    assert call.path == "/v1/images/generations"
    assert call.authorization == f"Bearer {SECRET}"
    assert {k: call.fields[k] for k in ("model", "n", "size", "quality", "background", "output_format")} == {
        "model": "gpt-image-1",
        "n": 2,
        "size": "1536x1024",
        "quality": "low",
        "background": "opaque",
        "output_format": "webp",
    }
    async with gate.app.state.services.sessions() as session:
        job = await session.scalar(select(Job))
    assert job is not None
    assert job.result is not None
    assert job.result["usage"]["total_tokens"] == 110
    assert SECRET not in job.logs


class ReadCountingStorage(LocalStorage):
    """Local storage that records which objects were read back."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    async def get(self, key: str) -> bytes:
        """Read, and record the key."""
        self.reads.append(key)
        return await super().get(key)


async def test_a_base64_answer_is_the_providers_own_text_and_a_replay_reads_the_stored_file(
    settings: Settings, upstream: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = ReadCountingStorage(settings.data_dir / "files")
    monkeypatch.setattr(app_module, "storage_for", lambda _settings: storage)
    body = {"model": "gpt-image-1", "prompt": "a fox", "size": "1024x1024"}
    async for gate in start(settings.model_copy(update=openai_settings(upstream))):
        headers = {**await gate.auth(), "Idempotency-Key": "fox-1"}
        first = await gate.client.post("/v1/images/generations", json=body, headers=headers)
        assert first.status_code == 200, first.text
        assert storage.reads == []  # answered with the text the provider sent, not the file encoded again
        replay = await gate.client.post("/v1/images/generations", json=body, headers=headers)
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert len(storage.reads) == 1  # nothing is kept for a second answer: it comes from storage
        job = await gate.client.get(f"/v1/images/jobs/{first.json()['job_id']}", headers=headers)
        stored = await gate.client.get(job.json()["images"][0]["url"])
    (image,) = first.json()["data"]
    assert base64.b64decode(image["b64_json"]) == stored.content
    assert stored.content.startswith(b"\x89PNG")
    assert replay.json()["data"] == first.json()["data"]


async def test_dall_e_3_runs_several_images_as_sequential_calls(sdk: AsyncOpenAI, upstream: FakeOpenAI) -> None:
    result = await sdk.images.generate(model="dall-e-3", prompt="x", n=3, style="natural", quality="hd")
    assert result.data is not None
    assert len(result.data) == 3
    assert [call.fields["n"] for call in upstream.requests] == [1, 1, 1]
    assert {call.fields["response_format"] for call in upstream.requests} == {"b64_json"}
    assert upstream.requests[0].fields["size"] == "1024x1024"  # 'auto' translated for DALL-E
    assert upstream.requests[0].fields["style"] == "natural"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "dall-e-3", "size": "512x512"}, "size"),
        ({"model": "dall-e-3", "quality": "low"}, "quality"),
        ({"model": "dall-e-2", "style": "vivid"}, "style"),
        ({"model": "dall-e-2", "background": "transparent"}, "background"),
        ({"model": "dall-e-2", "prompt": "x" * 1001}, "prompt"),
        ({"model": "gpt-image-1", "size": "800x600"}, "size"),
    ],
)
async def test_known_models_are_checked_before_any_upstream_spend(
    gate: Harness, upstream: FakeOpenAI, body: dict[str, Any], param: str
) -> None:
    response = await gate.client.post("/v1/images/generations", json={"prompt": "x", **body}, headers=await gate.auth())
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert upstream.requests == []


async def test_unknown_models_pass_through(sdk: AsyncOpenAI, upstream: FakeOpenAI) -> None:
    await sdk.images.generate(model="local-model", prompt="x", size="320x192")
    assert upstream.requests[0].fields["model"] == "local-model"
    assert upstream.requests[0].fields["size"] == "320x192"
    assert "output_format" not in upstream.requests[0].fields


async def test_edit_sends_every_image_and_the_mask(sdk: AsyncOpenAI, upstream: FakeOpenAI) -> None:
    red, blue, mask = tiny_png((255, 0, 0)), tiny_png((0, 0, 255)), tiny_png((0, 0, 0))
    await sdk.images.edit(
        model="gpt-image-1",
        prompt="merge",
        image=[("a.png", red), ("b.png", blue)],
        mask=("m.png", mask),
        input_fidelity="high",
    )
    (call,) = upstream.requests
    assert call.path == "/v1/images/edits"
    assert call.files["image[]"] == [red, blue]
    assert call.files["mask"] == [mask]
    assert call.fields["input_fidelity"] == "high"


async def test_dall_e_3_cannot_edit(gate: Harness, upstream: FakeOpenAI) -> None:
    response = await gate.client.post(
        "/v1/images/edits",
        data={"prompt": "x", "model": "dall-e-3"},
        files={"image": ("a.png", tiny_png())},
        headers=await gate.auth(),
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "image"
    assert upstream.requests == []


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
async def test_variations_go_to_the_variations_endpoint(sdk: AsyncOpenAI, upstream: FakeOpenAI) -> None:
    await sdk.images.create_variation(model="dall-e-2", image=("a.png", tiny_png()), n=2, size="256x256")
    (call,) = upstream.requests
    assert call.path == "/v1/images/variations"
    assert call.fields["n"] == "2"


async def test_url_answers_are_downloaded(gate: Harness) -> None:
    response = await gate.client.post(
        "/v1/images/generate", json={"prompt": "as-url please", "model": "local-model"}, headers=await gate.auth()
    )
    assert response.status_code == 200, response.text
    download = await gate.client.get(response.json()["images"][0]["url"])
    assert download.content == tiny_png((10, 200, 30), (16, 16))


async def test_downloads_are_bounded(gate: Harness) -> None:
    response = await gate.client.post(
        "/v1/images/generate", json={"prompt": "huge-url", "model": "local-model"}, headers=await gate.auth()
    )
    assert response.status_code == 502
    assert "larger than" in response.json()["error"]


async def test_upstream_rate_limit_is_a_429_with_retry_after_on_each_surface(sdk: AsyncOpenAI, gate: Harness) -> None:
    with pytest.raises(openai.RateLimitError) as limited:
        await sdk.images.generate(model="gpt-image-1", prompt="rate-limited")
    assert limited.value.response.headers["retry-after"] == "7"
    assert limited.value.response.headers["x-should-retry"] == "false"
    native = await gate.client.post(
        "/v1/images/generate", json={"prompt": "rate-limited", "model": "gpt-image-1"}, headers=await gate.auth()
    )
    assert native.status_code == 429
    assert native.headers["retry-after"] == "7"


async def test_content_policy_is_a_400_with_openais_code_and_message(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as rejected:
        await sdk.images.generate(model="gpt-image-1", prompt="policy test")
    assert rejected.value.code == "moderation_blocked"
    assert "safety system" in rejected.value.message


async def test_rejected_credentials_are_a_502_that_leaks_nothing(gate: Harness) -> None:
    response = await gate.client.post(
        "/v1/images/generations", json={"prompt": "bad-credentials", "model": "gpt-image-1"}, headers=await gate.auth()
    )
    assert response.status_code == 502
    assert "upstream credentials rejected" in response.json()["error"]["message"]
    assert "sk-" not in response.text


async def test_a_provider_failure_is_a_502(gate: Harness) -> None:
    response = await gate.client.post(
        "/v1/images/generate", json={"prompt": "upstream-down", "model": "gpt-image-1"}, headers=await gate.auth()
    )
    assert response.status_code == 502
    assert response.json()["error_code"] == "backend_error"


async def test_a_provider_slower_than_the_timeout_is_a_504(harness_with: HarnessFactory, upstream: FakeOpenAI) -> None:
    async with harness_with(**openai_settings(upstream, timeout_seconds=1)) as gate:
        response = await gate.client.post(
            "/v1/images/generate", json={"prompt": "slow", "model": "gpt-image-1"}, headers=await gate.auth()
        )
    assert response.status_code == 504
    assert response.json()["error_code"] == "backend_timeout"


async def test_partial_images_pass_through_a_stream(sdk: AsyncOpenAI, upstream: FakeOpenAI) -> None:
    stream = await sdk.images.generate(model="gpt-image-1", prompt="stream", stream=True, partial_images=2)
    events = [event async for event in stream]
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert upstream.requests[0].fields["stream"] is True
    completed = events[-1]
    assert isinstance(completed, openai.types.ImageGenCompletedEvent)
    assert base64.b64decode(completed.b64_json).startswith(b"\x89PNG")
    assert completed.usage.total_tokens == 55


def test_the_key_can_come_from_a_file_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path)
    key_file = tmp_path / "openai_key"
    key_file.write_text("sk-from-file\n")
    from_file = OpenAIBackend(name="o", options={"api_key_file": str(key_file)}, settings=settings)
    assert from_file.client.api_key == "sk-from-file"
    monkeypatch.setenv("MY_OPENAI_KEY", "sk-from-env")
    from_env = OpenAIBackend(name="o", options={"api_key_env": "MY_OPENAI_KEY"}, settings=settings)
    assert from_env.client.api_key == "sk-from-env"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="no API key"):
        OpenAIBackend(name="o", options={}, settings=settings)


def test_the_sdk_keeps_as_many_connections_alive_as_the_backend_runs_calls(tmp_path: Path) -> None:
    backends = {"big": BackendConfig(type="openai", concurrency=300)}
    settings = Settings(data_dir=tmp_path, backends=backends, models={"m": "big"}, default_model="m")
    backend = OpenAIBackend(name="big", options={"api_key": SECRET}, settings=settings)
    pool = backend.client._client._transport._pool  # type: ignore[attr-defined]
    assert (pool._max_connections, pool._max_keepalive_connections) == (300, 300)


def test_azure_uses_the_sdks_azure_client(tmp_path: Path) -> None:
    backend = OpenAIBackend(
        name="azure",
        options={
            "api_key": "k",
            "azure_endpoint": "https://example.openai.azure.com",
            "azure_api_version": "2025-04-01",
            "azure_deployment": "images",
        },
        settings=Settings(data_dir=tmp_path),
    )
    assert isinstance(backend.client, openai.AsyncAzureOpenAI)
    with pytest.raises(ValueError, match="azure_api_version"):
        OpenAIBackend(
            name="a", options={"api_key": "k", "azure_endpoint": "https://x"}, settings=Settings(data_dir=tmp_path)
        )


async def test_vision_asks_the_vision_model_with_the_images_inline(
    harness_with: HarnessFactory, upstream: FakeOpenAI
) -> None:
    upstream.requests.clear()
    async with harness_with(**openai_settings(upstream, vision_model="gpt-4.1-mini")) as gate:
        images = [base64.b64encode(tiny_png()).decode()] * 2
        body = {"prompt": "Three cats? VERDICT: PASS or FAIL", "images_base64": images, "model": "gpt-image-1"}
        response = await gate.client.post("/v1/vision", json=body, headers=await gate.auth())
        assert response.status_code == 200, response.text
        assert response.json()["text"] == "gpt-4.1-mini saw 2 image(s)"
        sent = upstream.requests[-1]
        assert sent.path == "/v1/chat/completions"
        assert sent.authorization == f"Bearer {SECRET}"
        urls = [part["image_url"]["url"] for part in sent.fields["messages"][0]["content"] if part["type"] != "text"]
        assert all(url.startswith("data:image/png;base64,") for url in urls)
        assert len(urls) == 2


@pytest.mark.parametrize(
    ("prompt", "status", "code"),
    [
        ("no-answer", 502, "backend_error"),
        ("rate-limited", 429, "rate_limit_exceeded"),
        ("bad-credentials", 502, "upstream_credentials_rejected"),
        ("upstream-down", 502, "backend_error"),
    ],
)
async def test_vision_errors_are_mapped_like_generation(
    harness_with: HarnessFactory, upstream: FakeOpenAI, prompt: str, status: int, code: str
) -> None:
    async with harness_with(**openai_settings(upstream, vision_model="gpt-4.1-mini")) as gate:
        body = {"prompt": prompt, "images_base64": [base64.b64encode(tiny_png()).decode()], "model": "gpt-image-1"}
        response = await gate.client.post("/v1/vision", json=body, headers=await gate.auth())
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
        assert "sk-" not in response.text


async def test_without_a_vision_model_vision_is_a_clear_400(gate: Harness) -> None:
    body = {"prompt": "look", "images_base64": [base64.b64encode(tiny_png()).decode()], "model": "gpt-image-1"}
    response = await gate.client.post("/v1/vision", json=body, headers=await gate.auth())
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"


def test_a_process_that_never_calls_the_provider_never_imports_the_sdk() -> None:
    # The command line loads every backend type for its commands; the SDK costs about a second of CPU to import.
    script = "import sys, imagegate.app, imagegate.cli; print(sorted(m for m in sys.modules if m.startswith('openai')))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stdout
