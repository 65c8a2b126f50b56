"""/docs works offline and /openapi.json says what the API really answers, surface by surface."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import jsonschema
import pytest
from openapi_spec_validator import validate

from imagegate.app import create_app
from tests.helpers import Harness, HarnessFactory, make_settings

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
ENVELOPES = {"native": "NativeError", "openai": "OpenAIError", "oig": "LegacyError"}
# Operations anyone may call; every other one needs an API key (or, for /metrics, the network or its token).
OPEN = {("get", "/health"), ("get", "/ready"), ("get", "/generated/{name}"), ("get", "/metrics")}
ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
ORIGINAL_MODELS = {"dall-e-2": "fake", "dall-e-3": "fake"}


def _schema_for(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    schema: dict[str, Any] = create_app(make_settings("sqlite+aiosqlite://", tmp_path, **overrides)).openapi()
    return schema


@pytest.fixture
def schema(tmp_path: Path) -> dict[str, Any]:
    return _schema_for(tmp_path)


@pytest.fixture
async def offline_client(tmp_path: Path) -> AsyncIterator[httpx2.AsyncClient]:
    """The app without its lifespan: the docs need no database."""
    app = create_app(make_settings("sqlite+aiosqlite://", tmp_path))
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method, path, operation


def surface(path: str) -> str:
    if path.startswith(("/v1/images/generations", "/v1/images/edits", "/v1/images/variations", "/v1/models")):
        return "openai"
    if path == "/generate" or path.startswith("/images/"):
        return "oig"
    return "native"


def refs(node: Any) -> set[str]:
    """Every component a schema node refers to, directly or through anyOf/oneOf."""
    if isinstance(node, dict):
        found = {node["$ref"].rsplit("/", 1)[-1]} if "$ref" in node else set()
        for value in node.values():
            found |= refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(refs(item) for item in node)) if node else set()
    return set()


async def test_the_docs_page_loads_only_from_this_server(offline_client: httpx2.AsyncClient) -> None:
    page = await offline_client.get("/docs")
    assert page.status_code == 200
    assert "swagger-ui" in page.text
    assets = ASSET.findall(page.text)
    assert len(assets) >= 3, assets  # the script, the stylesheet, the icon
    assert "http://" not in page.text.replace("http://testserver", "")
    assert "https://" not in page.text
    for asset in assets:
        assert asset.startswith("/"), asset
        fetched = await offline_client.get(asset)
        assert fetched.status_code == 200, asset
        assert len(fetched.content) > 0, asset
    assert "validatorUrl" in page.text  # Swagger UI would otherwise fetch a badge from the internet
    assert (await offline_client.get("/openapi.json")).status_code == 200


async def test_redoc_loads_only_from_this_server(offline_client: httpx2.AsyncClient) -> None:
    page = await offline_client.get("/redoc")
    assert page.status_code == 200
    assert "<redoc" in page.text
    assert 'spec-url="/openapi.json"' in page.text
    assert "http://" not in page.text.replace("http://testserver", "")
    assert "https://" not in page.text  # no web fonts from the internet
    # The bundle's own logo link points at a CDN: the page's policy keeps the browser from fetching it.
    assert "img-src 'self' data:" in page.headers["content-security-policy"]
    assets = ASSET.findall(page.text)
    assert "/redoc/assets/redoc.standalone.js" in assets
    for asset in assets:
        assert asset.startswith("/"), asset
        fetched = await offline_client.get(asset)
        assert fetched.status_code == 200, asset
        assert len(fetched.content) > 0, asset


async def test_the_docs_follow_the_root_path(tmp_path: Path) -> None:
    app = create_app(make_settings("sqlite+aiosqlite://", tmp_path, root_path="/gate"))
    transport = httpx2.ASGITransport(app=app, root_path="/gate")
    async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for docs_page in ("/gate/docs", "/gate/redoc"):
            page = await client.get(docs_page)
            for asset in ASSET.findall(page.text):
                assert asset.startswith(("/gate/docs/assets/", "/gate/redoc/assets/")), asset
                assert (await client.get(asset)).status_code == 200, asset
            assert "/gate/openapi.json" in page.text


def test_the_schema_is_valid_openapi(schema: dict[str, Any]) -> None:
    validate(schema)  # raises with the first problem


def test_every_operation_documents_a_successful_answer_with_its_body(schema: dict[str, Any]) -> None:
    for method, path, operation in operations(schema):
        ok = {status: answer for status, answer in operation["responses"].items() if status.startswith("2")}
        assert ok, f"{method} {path} documents no 2xx answer"
        for status, answer in ok.items():
            content = answer.get("content", {})
            assert content, f"{method} {path} {status} has no body schema"
            assert all("schema" in media for media in content.values()), (method, path, status)


def test_no_422_where_the_surface_never_sends_it(schema: dict[str, Any]) -> None:
    for method, path, operation in operations(schema):
        headers = {p["name"].lower() for p in operation.get("parameters", []) if p["in"] == "header"}
        if "idempotency-key" not in headers:  # 422 is only ever idempotency_key_reused
            assert "422" not in operation["responses"], f"{method} {path}"
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_errors_reference_their_surface_s_envelope(schema: dict[str, Any]) -> None:
    checked = 0
    for method, path, operation in operations(schema):
        for status, answer in operation["responses"].items():
            if not status.startswith(("4", "5")) or (method, path) == ("get", "/ready"):
                continue
            envelope = ENVELOPES[surface(path)]
            assert envelope in refs(answer), f"{method} {path} {status}: {refs(answer)}"
            assert not refs(answer) - {envelope, "NativeFailedJob"}, (method, path, status)
            checked += 1
    assert checked > 50


def test_a_key_is_asked_for_where_one_is_needed(schema: dict[str, Any]) -> None:
    scheme = schema["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")  # Swagger UI's Authorize button
    for method, path, operation in operations(schema):
        if (method, path) in OPEN:
            assert "security" not in operation, f"{method} {path}"
        else:
            assert operation.get("security") == [{"bearerAuth": []}], f"{method} {path}"
            assert "401" in operation["responses"], f"{method} {path}"


def test_keyless_openai_image_gen_calls_are_optional_only_with_an_anonymous_key(tmp_path: Path) -> None:
    schema = _schema_for(tmp_path, oig_anonymous_key="key_anonymous")
    assert schema["paths"]["/generate"]["post"]["security"] == [{"bearerAuth": []}, {}]
    assert schema["paths"]["/v1/images/generate"]["post"]["security"] == [{"bearerAuth": []}]


def test_edits_and_variations_document_their_multipart_bodies(schema: dict[str, Any]) -> None:
    edits = schema["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]
    form = edits["multipart/form-data"]["schema"]
    assert form["properties"]["image"]["items"]["format"] == "binary"
    assert form["properties"]["mask"]["format"] == "binary"
    assert {"prompt", "n", "size", "input_fidelity"} <= set(form["properties"])
    assert set(form["required"]) == {"image", "prompt"}
    assert "application/json" in edits
    variations = schema["paths"]["/v1/images/variations"]["post"]["requestBody"]["content"]
    assert variations["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"
    assert "prompt" not in variations["multipart/form-data"]["schema"]["properties"]
    legacy = schema["paths"]["/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert legacy == {"$ref": "#/components/schemas/LegacyGenerateBody"}


def test_metrics_are_documented_as_text(schema: dict[str, Any]) -> None:
    assert "text/plain" in schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


def test_202s_document_their_polling_hint(schema: dict[str, Any]) -> None:
    for method, path, operation in operations(schema):
        if "202" in operation["responses"]:
            assert "Retry-After" in operation["responses"]["202"]["headers"], f"{method} {path}"


def _check(schema: dict[str, Any], operation: dict[str, Any], response: httpx2.Response) -> None:
    """The answer's JSON fits what the schema documents for its status."""
    documented = operation["responses"][str(response.status_code)]["content"]["application/json"]["schema"]
    jsonschema.validate(response.json(), {**documented, "components": schema["components"]})


async def test_real_answers_fit_the_schema(harness: Harness) -> None:
    schema = harness.app.openapi()
    paths = schema["paths"]
    auth = await harness.auth()
    client = harness.client
    made = await client.post("/v1/images/generate", json={"prompt": "a fox"}, headers=auth)
    _check(schema, paths["/v1/images/generate"]["post"], made)
    failed = await client.post("/v1/images/generate", json={"prompt": "fail: no"}, headers=auth)
    _check(schema, paths["/v1/images/generate"]["post"], failed)
    bad = await client.post("/v1/images/generate", json={"prompt": 3}, headers=auth)
    assert bad.status_code == 400
    _check(schema, paths["/v1/images/generate"]["post"], bad)
    accepted = await client.post("/v1/images/jobs", json={"prompt": "later"}, headers=auth)
    _check(schema, paths["/v1/images/jobs"]["post"], accepted)
    _check(schema, paths["/v1/images/jobs"]["get"], await client.get("/v1/images/jobs", headers=auth))
    one = await client.get(f"/v1/images/jobs/{made.json()['id']}", headers=auth)
    _check(schema, paths["/v1/images/jobs/{job_id}"]["get"], one)
    _check(schema, paths["/v1/images/jobs/{job_id}"]["get"], await client.get("/v1/images/jobs/img_x", headers=auth))
    usage = await client.get("/v1/usage", headers=auth)
    _check(schema, paths["/v1/usage"]["get"], usage)
    documented = schema["components"]["schemas"]["Usage"]
    assert set(usage.json()) == set(documented["properties"]) == set(documented["required"])
    _check(schema, paths["/v1/usage"]["get"], await client.get("/v1/usage"))
    _check(schema, paths["/health"]["get"], await client.get("/health"))
    _check(schema, paths["/ready"]["get"], await client.get("/ready"))
    images = await client.post("/v1/images/generations", json={"prompt": "a cat"}, headers=auth)
    _check(schema, paths["/v1/images/generations"]["post"], images)
    refused = await client.post("/v1/images/generations", json={"prompt": "a cat", "n": 0}, headers=auth)
    assert refused.status_code == 400
    _check(schema, paths["/v1/images/generations"]["post"], refused)
    _check(schema, paths["/v1/models"]["get"], await client.get("/v1/models", headers=auth))
    _check(schema, paths["/v1/images/models"]["get"], await client.get("/v1/images/models", headers=auth))
    deleted = await client.delete(f"/v1/images/jobs/{made.json()['id']}", headers=auth)
    _check(schema, paths["/v1/images/jobs/{job_id}"]["delete"], deleted)


async def test_real_openai_image_gen_answers_fit_the_schema(harness_with: HarnessFactory) -> None:
    async with harness_with(models=ORIGINAL_MODELS, default_model="dall-e-3") as h:
        schema = h.app.openapi()
        operation = schema["paths"]["/generate"]["post"]
        auth = await h.auth()
        made = await h.client.post("/generate", json={"prompt": "a lake"}, headers=auth)
        assert made.status_code == 200, made.text
        _check(schema, operation, made)
        _check(schema, operation, await h.client.post("/generate", json={"prompt": ""}, headers=auth))
        image_id = made.json()["images"][0]["id"]
        deleted = await h.client.delete(f"/images/{image_id}", headers=auth)
        _check(schema, schema["paths"]["/images/{image_id}"]["delete"], deleted)
        _check(schema, schema["paths"]["/images/{image_id}"]["get"], await h.client.get(f"/images/{image_id}"))
