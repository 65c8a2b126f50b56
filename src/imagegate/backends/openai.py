"""The OpenAI backend: the Images API (or any OpenAI-compatible provider, or Azure OpenAI).

The SDK is configured as usual and streams, vision and the client's settings go through it; the plain Images
calls are made on its pooled HTTP client directly (openai_http), which costs a fraction of the SDK's CPU a call.

The SDK is imported where it is used, not at the top: importing it costs about a second of CPU, and every
process loads this module (the command line collects each backend type's commands) while most never call it.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx2
from pydantic import BaseModel, Field, SecretStr, model_validator

from imagegate.backends.base import (
    BackendRequest,
    BackendResult,
    InputImage,
    JobReporter,
    OutputImage,
    RequestShape,
    VisionRequest,
)
from imagegate.backends.fetch import ImageFetcher
from imagegate.backends.openai_errors import translate
from imagegate.backends.openai_http import Files, ImagesAPI, ImagesEndpoint
from imagegate.backends.openai_models import check_request, rules_for, upstream_size
from imagegate.errors import (
    BackendError,
    ImagegateError,
    UpstreamRejected,
)
from imagegate.settings import BackendConfig, Settings

if TYPE_CHECKING:
    import openai

GPT_PARAMS = ("background", "moderation", "output_compression")
DALLE_QUALITY_AS_GPT = {"standard": "auto", "hd": "high"}
R = TypeVar("R", bound=RequestShape)


class OpenAIOptions(BaseModel):
    """Options of an OpenAI-type backend."""

    model_config = {"extra": "forbid"}

    base_url: str | None = Field(default=None, description="An OpenAI-compatible provider's /v1 URL.")
    api_key: SecretStr | None = None
    api_key_file: Path | None = Field(default=None, description="A file holding the key (Docker secrets).")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="Environment variable read when neither is set.")
    organization: str | None = None
    project: str | None = None
    timeout_seconds: float = Field(default=300.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    azure_endpoint: str | None = None
    azure_api_version: str | None = None
    azure_deployment: str | None = None
    upstream_model: str | None = Field(default=None, description="Send this model name instead of the caller's.")
    vision_model: str | None = Field(
        default=None,
        description="A vision-capable chat model (e.g. gpt-4.1-mini) for POST /v1/vision; none: no vision.",
    )
    max_download_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    download_timeout_seconds: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _azure_needs_a_version(self) -> OpenAIOptions:
        if self.azure_endpoint and not self.azure_api_version:
            raise ValueError("azure_endpoint needs azure_api_version")
        return self

    def key(self) -> str:
        """The API key from the option, the file or the environment; ValueError when there is none."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_file is not None:
            return self.api_key_file.read_text(encoding="utf-8").strip()
        value = os.environ.get(self.api_key_env)
        if not value:
            raise ValueError(f"no API key: set api_key, api_key_file or the {self.api_key_env} environment variable")
        return value


class OpenAIBackend:
    """Generations, edits and variations through the official SDK, errors translated for callers."""

    def __init__(self, *, name: str, options: Mapping[str, Any], settings: Settings) -> None:
        import openai

        self.name = name
        self.options = OpenAIOptions.model_validate(dict(options))
        http = _pooled_client(_concurrency(name, settings))
        common: dict[str, Any] = {
            "api_key": self.options.key(),
            "organization": self.options.organization,
            "project": self.options.project,
            "timeout": self.options.timeout_seconds,
            "max_retries": self.options.max_retries,
            "http_client": http,
        }
        self.client: openai.AsyncOpenAI
        if self.options.azure_endpoint:
            self.client = openai.AsyncAzureOpenAI(
                azure_endpoint=self.options.azure_endpoint,
                api_version=self.options.azure_api_version,
                azure_deployment=self.options.azure_deployment,
                **common,
            )
        else:
            self.client = openai.AsyncOpenAI(base_url=self.options.base_url, **common)
        self._api = ImagesAPI(
            http,
            ImagesEndpoint.of(self.client),
            timeout=self.options.timeout_seconds,
            max_retries=self.options.max_retries,
        )
        self._downloads = ImageFetcher(
            provider_url=self.options.azure_endpoint or self.options.base_url or str(self.client.base_url),
            timeout=self.options.download_timeout_seconds,
            max_bytes=self.options.max_download_bytes,
        )
        self.can_describe = self.options.vision_model is not None

    @property
    def _images(self) -> Any:
        # The SDK's overloads cannot type arguments assembled per model; the results are checked below.
        return self.client.images

    def model_for(self, request: RequestShape) -> str:
        """The model name sent upstream."""
        return self.options.upstream_model or request.model

    def sizes(self, model: str) -> tuple[str, ...] | None:
        """The sizes the upstream model takes (None: a model we do not know, or one of flexible sizes)."""
        rules = rules_for(self.options.upstream_model or model)
        return None if rules is None or rules.sizes is None else tuple(sorted(rules.sizes))

    def check(self, request: RequestShape) -> None:
        """Refuse what a known model would refuse, before anything is paid for."""
        check_request(self.model_for(request), self.in_upstream_terms(request))

    def in_upstream_terms(self, request: R) -> R:
        """A DALL-E name routed to a GPT image model (upstream_model) keeps working: its options are translated.

        DALL-E was retired; clients that still send its names and options get the nearest GPT image request:
        quality standard → auto and hd → high, no style, and for fixed-size models the size of the same shape.
        """
        upstream = self.model_for(request)
        rules = rules_for(upstream)
        if upstream == request.model or not request.model.startswith("dall-e") or rules is None or not rules.gpt_image:
            return request
        size = request.size
        if rules.sizes is not None and size not in rules.sizes:
            size = _same_shape(request.width, request.height)
        return replace(
            request,
            quality=DALLE_QUALITY_AS_GPT.get(request.quality, request.quality),
            size=size,
            params={name: value for name, value in request.params.items() if name != "style"},
        )

    async def generate(self, request: BackendRequest, reporter: JobReporter) -> BackendResult:
        """Call the Images API as often as the model needs for request.count images."""
        translated = self.in_upstream_terms(request)
        if translated is not request:
            reporter.write(
                f"openai: {request.model} options as {self.model_for(request)}: quality={translated.quality}\n"
            )
        request = translated
        model = self.model_for(request)
        rules = rules_for(model)
        per_call = rules.max_n if rules else request.count
        images: list[OutputImage] = []
        metadata: dict[str, Any] = {}
        while len(images) < request.count:
            n = min(per_call, request.count - len(images))
            try:
                response = await self._call(request, model, n, reporter)
            except ImagegateError as error:
                if not images:
                    raise
                reporter.write(
                    f"openai: call {len(images) + 1} failed ({error.code}); keeping the images already made\n"
                )
                break
            data = _items(response)
            images += [await self._image(item) for item in data]
            _merge_metadata(metadata, data, response.get("usage"))
            if not data:
                break
        return BackendResult(images=images, metadata=metadata)

    async def _call(self, request: BackendRequest, model: str, n: int, reporter: JobReporter) -> dict[str, Any]:
        operation = request.operation
        arguments = self._arguments(request, model, n, operation)
        reporter.write(f"openai: {operation} model={model} n={n} size={arguments.get('size')}\n")
        if _streams(request, model, operation):
            return await self._streamed(request, operation, arguments, reporter)
        if operation == "variation":
            fields = {k: v for k, v in arguments.items() if k in ("model", "n", "size", "response_format", "user")}
            return await self._api.post("images/variations", model, fields, [("image", _file(request.references[0]))])
        if operation == "edit":
            fields = {"prompt": request.prompt, **arguments}
            return await self._api.post("images/edits", model, fields, _edit_files(request))
        return await self._api.post("images/generations", model, {"prompt": request.prompt, **arguments})

    def _arguments(self, request: BackendRequest, model: str, n: int, operation: str) -> dict[str, Any]:
        rules = rules_for(model)
        arguments: dict[str, Any] = {"model": model, "n": n, "size": upstream_size(model, request.size)}
        if request.quality != "auto":
            arguments["quality"] = request.quality
        names = ("style", "user", *GPT_PARAMS, *(("input_fidelity",) if operation == "edit" else ()))
        arguments.update({name: request.params[name] for name in names if request.params.get(name) is not None})
        if rules is not None and not rules.gpt_image:
            arguments["response_format"] = "b64_json"  # DALL-E would answer with short-lived URLs
        elif rules is not None or request.output_format != "png":
            # Compatible providers may not know output_format; send it only when it matters.
            arguments["output_format"] = request.output_format
        return arguments

    async def _streamed(
        self, request: BackendRequest, operation: str, arguments: dict[str, Any], reporter: JobReporter
    ) -> dict[str, Any]:
        """Stream from the provider so its partial images reach our callers; the result as a plain answer."""
        import openai

        arguments = {**arguments, "partial_images": request.params["partial_images"]}
        try:
            if operation == "edit":
                stream = await self._images.edit(
                    image=[_file(ref, f"image-{i}") for i, ref in enumerate(request.references)],
                    prompt=request.prompt,
                    stream=True,
                    **({"mask": _file(request.mask, "mask")} if request.mask else {}),
                    **arguments,
                )
            else:
                stream = await self._images.generate(prompt=request.prompt, stream=True, **arguments)
            data: list[dict[str, Any]] = []
            usage = None
            async for event in stream:
                if event.type.endswith(".partial_image"):
                    index = getattr(event, "partial_image_index", 0)
                    reporter.partial_image(index, base64.b64decode(event.b64_json))
                elif event.type.endswith(".completed"):
                    data.append({"b64_json": event.b64_json})
                    usage = getattr(event, "usage", None)
        except openai.APIError as error:
            raise translate(error) from None
        return {"data": data, "usage": usage.model_dump() if usage is not None else None}

    async def _image(self, item: dict[str, Any]) -> OutputImage:
        b64, url = item.get("b64_json"), item.get("url")
        if isinstance(b64, str) and b64:
            try:
                data = binascii.a2b_base64(b64, strict_mode=True)
            except (binascii.Error, ValueError):
                raise BackendError("The image provider returned invalid base64.") from None
            # Kept as sent: a base64 answer to our caller reuses it instead of encoding the bytes again.
            return OutputImage(data, b64=b64)
        if isinstance(url, str) and url:
            return OutputImage(await self._download(url))
        raise BackendError("The image provider returned an image without data.")

    async def _download(self, url: str) -> bytes:
        """Fetch an image the provider returned as a URL (http(s), same-host redirects, public addresses)."""
        return await self._downloads.fetch(url)

    async def describe(self, request: VisionRequest, reporter: JobReporter) -> str:
        """Ask the vision model through Chat Completions with the images inline; an empty answer is a failure."""
        import openai

        model = self.options.vision_model
        if model is None:
            raise UpstreamRejected("This backend has no vision_model configured.")
        content: list[dict[str, Any]] = [{"type": "text", "text": request.prompt}]
        for image in request.images:
            url = f"data:image/{image.format};base64,{base64.b64encode(image.data).decode()}"
            content.append({"type": "image_url", "image_url": {"url": url}})
        reporter.write(f"openai: vision model={model} images={len(request.images)}\n")
        try:
            completion = await self._chat.create(model=model, messages=[{"role": "user", "content": content}])
        except openai.APIError as error:
            raise translate(error) from None
        choices = getattr(completion, "choices", None) or []
        answer = choices[0].message.content if choices and choices[0].message else None
        if not isinstance(answer, str) or not answer.strip():
            raise BackendError("The provider's model gave no answer about the image(s).")
        return answer

    @property
    def _chat(self) -> Any:
        # The SDK's message types are a union of TypedDicts; the answer is checked above.
        return self.client.chat.completions

    async def sweep(self) -> int:
        """Nothing of its own to clean."""
        return 0

    async def aclose(self) -> None:
        """Close the SDK's and the downloader's connections."""
        await self.client.close()
        await self._downloads.aclose()


def _concurrency(name: str, settings: Settings) -> int:
    config = settings.backends.get(name)
    return config.concurrency if config is not None else int(BackendConfig.model_fields["concurrency"].default)


def _pooled_client(concurrency: int) -> httpx2.AsyncClient:
    """The SDK's HTTP client with as many kept-alive connections as the backend runs calls at once.

    The SDK's own pool keeps 100 alive: a backend running more would open a new connection for every call.
    """
    import openai

    return openai.DefaultAsyncHttpxClient(
        limits=httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    )


def _same_shape(width: int, height: int) -> str:
    """The fixed GPT image size with the same orientation."""
    if width == height:
        return "1024x1024"
    return "1536x1024" if width > height else "1024x1536"


def _streams(request: BackendRequest, model: str, operation: str) -> bool:
    rules = rules_for(model)
    wanted = request.params.get("partial_images")
    return bool(wanted) and operation != "variation" and (rules is None or rules.gpt_image)


def _file(image: InputImage | None, name: str = "image") -> tuple[str, bytes, str]:
    assert image is not None
    return (f"{name}.{image.format}", image.data, f"image/{image.format}")


def _edit_files(request: BackendRequest) -> Files:
    """The images as image[] parts (as the SDK sends a list) and the mask, if any."""
    files: Files = [("image[]", _file(ref, f"image-{i}")) for i, ref in enumerate(request.references)]
    return files + ([("mask", _file(request.mask, "mask"))] if request.mask else [])


def _items(response: dict[str, Any]) -> list[dict[str, Any]]:
    data = response.get("data")
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def _merge_metadata(metadata: dict[str, Any], data: list[dict[str, Any]], usage: Any) -> None:
    revised = next((text for item in data if isinstance(text := item.get("revised_prompt"), str) and text), None)
    if revised and "revised_prompt" not in metadata:
        metadata["revised_prompt"] = revised
    if isinstance(usage, dict):
        metadata["usage"] = _add_usage(metadata.get("usage"), _without_none(usage))


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    """What the SDK's model_dump(exclude_none=True) kept: the fields that have a value, at every level."""
    return {k: _without_none(v) if isinstance(v, dict) else v for k, v in values.items() if v is not None}


def _add_usage(total: dict[str, Any] | None, more: dict[str, Any]) -> dict[str, Any]:
    if total is None:
        return more
    return {
        key: _add_usage(total.get(key), value) if isinstance(value, dict) else (total.get(key) or 0) + value
        for key, value in more.items()
    }
