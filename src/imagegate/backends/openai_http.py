"""The Images API calls on the backend's pooled HTTP client, without the SDK's per-call machinery.

Why: against a fast provider the SDK's per-call work (option copies, the request's transform and build, the
answer parsed into pydantic models) cost more CPU than the HTTP exchange itself (bench/NOTES.md, issue 14).
What the SDK settles once (base URL, credentials, Azure's api-version and deployment, organization and
project) is read from the configured SDK client; what it does per call is done here: the JSON or multipart
body, the SDK's retry policy (connection errors, timeouts, 408, 409, 429 and 5xx, honouring x-should-retry and
Retry-After), and the provider's errors mapped exactly as openai_errors maps the SDK's.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
import httpx2
import orjson

from imagegate.backends.openai_errors import status_error
from imagegate.errors import BackendError, BackendTimeout

if TYPE_CHECKING:
    import openai

INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 120.0  # a provider asking to wait longer is not retried, as the SDK does
RETRIED_STATUSES = frozenset({408, 409, 429})
# What the SDK counts as the connection failing (TLS failures anyio leaves unmapped included).
CONNECTION_ERRORS = (httpx2.RequestError, ssl.SSLError, anyio.EndOfStream)
UNEXPECTED = "The image provider answered unexpectedly."

Files = list[tuple[str, tuple[str, bytes, str]]]


@dataclass(frozen=True)
class ImagesEndpoint:
    """Where the Images calls go and the headers they carry, as the configured SDK client sends them."""

    base_url: str
    headers: Mapping[str, str]
    params: Mapping[str, str]
    model_in_path: bool  # Azure without a deployment in its URL: /deployments/{model}/images/...

    @classmethod
    def of(cls, client: openai.AsyncOpenAI) -> ImagesEndpoint:
        """The endpoint of an SDK client (its base URL, credentials, organization, project and query)."""
        import openai

        headers = {**client.auth_headers, "User-Agent": client.user_agent}  # the provider sees the same client
        if client.organization is not None:
            headers["OpenAI-Organization"] = client.organization
        if client.project is not None:
            headers["OpenAI-Project"] = client.project
        azure = isinstance(client, openai.AsyncAzureOpenAI)
        return cls(
            base_url=str(client.base_url),
            headers=headers,
            params={name: str(value) for name, value in client.default_query.items()},
            model_in_path=azure and "/deployments" not in client.base_url.path,
        )

    def url(self, path: str, model: str) -> str:
        """The URL of an Images path such as 'images/generations' for this model."""
        if self.model_in_path:
            return f"{self.base_url}deployments/{quote(model, safe='')}/{path}"
        return f"{self.base_url}{path}"


class ImagesAPI:
    """POSTs to the Images API and their JSON answers, retried and failed as the SDK would."""

    def __init__(self, http: httpx2.AsyncClient, endpoint: ImagesEndpoint, *, timeout: float, max_retries: int) -> None:
        self._http = http
        self._endpoint = endpoint
        self._timeout = httpx2.Timeout(timeout)
        self._max_retries = max_retries

    async def post(self, path: str, model: str, fields: dict[str, Any], files: Files | None = None) -> dict[str, Any]:
        """The provider's answer to one call: a JSON body, or multipart form fields when there are files."""
        retries = 0
        while True:
            last = retries >= self._max_retries
            try:
                response = await self._http.send(self._request(path, model, fields, files))
            except httpx2.TimeoutException:
                if last:
                    raise BackendTimeout("The image provider did not answer in time.") from None
                delay = retry_delay(retries, None)
            except CONNECTION_ERRORS:
                if last:
                    raise BackendError("The image provider could not be reached.") from None
                delay = retry_delay(retries, None)
            else:
                if response.status_code < 400:
                    return answer(response.content)
                if last or not should_retry(response.status_code, response.headers):
                    raise status_error(response.status_code, response.headers, response.content)
                delay = retry_delay(retries, response.headers)
            retries += 1
            await asyncio.sleep(delay)

    def _request(self, path: str, model: str, fields: dict[str, Any], files: Files | None) -> httpx2.Request:
        endpoint = self._endpoint
        url, headers = endpoint.url(path, model), {**endpoint.headers, "Accept": "application/json"}
        if files is None:
            headers["Content-Type"] = "application/json"
            body: dict[str, Any] = {"content": orjson.dumps(fields)}
        else:
            body = {"data": fields, "files": files}
        return self._http.build_request(
            "POST", url, params=endpoint.params, headers=headers, timeout=self._timeout, **body
        )


def answer(content: bytes) -> dict[str, Any]:
    """The provider's JSON answer as a dict; BackendError for anything else."""
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise BackendError(UNEXPECTED) from None
    if not isinstance(parsed, dict):
        raise BackendError(UNEXPECTED)
    return parsed


def should_retry(status: int, headers: Mapping[str, str]) -> bool:
    """Whether a failed answer is worth another try: the SDK's rule."""
    after = retry_after(headers)
    if after is not None and math.isfinite(after) and after > MAX_RETRY_AFTER:
        return False
    told = headers.get("x-should-retry")
    if told in ("true", "false"):
        return told == "true"
    return status in RETRIED_STATUSES or status >= 500


def retry_delay(retries: int, headers: Mapping[str, str] | None) -> float:
    """Seconds before the next try: the provider's Retry-After when reasonable, else backoff with jitter."""
    after = retry_after(headers) if headers is not None else None
    if after is not None and math.isfinite(after) and 0 < after <= MAX_RETRY_AFTER:
        return after
    backoff = min(INITIAL_RETRY_DELAY * 2.0 ** min(retries, 1000), MAX_RETRY_DELAY)
    return backoff * (1 - 0.25 * random.random())  # noqa: S311 (jitter, not a secret)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After-Ms or Retry-After (seconds or an HTTP date) in seconds; None when absent or unreadable."""
    for name, divisor in (("retry-after-ms", 1000), ("retry-after", 1)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) / divisor
        except ValueError:
            continue
    value = headers.get("retry-after")
    try:
        when = email.utils.parsedate_tz(value) if value else None
        return None if when is None else email.utils.mktime_tz(when) - time.time()
    except (TypeError, ValueError, OverflowError, OSError):
        return None
