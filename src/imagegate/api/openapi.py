"""/openapi.json as the API really answers: each surface's answers and error envelopes, its bearer key, its bodies.

FastAPI only sees what the routers declare; the surfaces parse some bodies themselves (multipart edits, the
openai-image-gen body), answer with dicts, and never send FastAPI's 422 (a bad input is a 400 in the surface's
own shape). This module completes the generated schema from the tables below; tests/api/test_openapi.py walks
the result so that a new endpoint cannot go undocumented.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from imagegate.api import legacy, openai, schemas
from imagegate.api.headers import POLL_RETRY_AFTER
from imagegate.api.openai_shapes import EditFields, EditJsonBody, VariationFields
from imagegate.settings import Settings

METRICS_BEARER = "metricsToken"
REF = "#/components/schemas/{model}"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")

STATUS_TEXT = {
    400: "Bad input: the message says what to change.",
    401: "No key, or an unknown one: send 'Authorization: Bearer <key>'.",
    403: "The key is disabled or expired, lacks the scope, or may not use the model.",
    404: "No such thing for this key.",
    409: "A conflicting request is in progress (for example the same Idempotency-Key).",
    413: "The body or an image is over the limit.",
    415: "The body is not application/json.",
    422: "The Idempotency-Key was used before with a different request.",
    429: "The key's rate limit, a quota or its concurrent jobs are used up, or the queue is full; see Retry-After.",
    500: "Our bug or an upstream failure; the details are in the operator's log.",
    502: "The image backend failed.",
    503: "Busy or unavailable (the database, the storage, the backend); retry after Retry-After.",
    504: "The backend took too long.",
    507: "The storage is full.",
}
KEYED = (401, 403, 429)
SUBMITTING = (400, *KEYED, 409, 413, 422, 503, 507)
GENERATING = (*SUBMITTING, 502, 504)
# Statuses at which the native generate answers with the failed job rather than the error envelope.
FAILED_JOB_STATUSES = (400, 429, 502, 503, 504)

RETRY_AFTER = {"Retry-After": {"description": "Seconds until it is worth asking again.", "schema": {"type": "string"}}}
POLLING = {
    "Retry-After": {
        "description": f"Seconds until it is worth polling (the hint is {POLL_RETRY_AFTER}).",
        "schema": {"type": "string"},
    }
}
LOCATION = {"Location": {"description": "The job's status_url.", "schema": {"type": "string"}}}


def json_answer(model: type[BaseModel], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON response whose body is the model."""
    answer: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": ref(model)}}}
    if headers:
        answer["headers"] = headers
    return answer


def ref(model: type[BaseModel]) -> dict[str, str]:
    """A $ref to the model's component schema."""
    return {"$ref": REF.format(model=model.__name__)}


def binary(types: tuple[str, ...], description: str) -> dict[str, Any]:
    """A response of raw bytes in one of the media types."""
    content = {kind: {"schema": {"type": "string", "format": "binary"}} for kind in types}
    return {"description": description, "content": content}


NATIVE_ACCEPTED = json_answer(
    schemas.NativeJob, "Accepted: the job goes on; poll its status_url.", {**LOCATION, **POLLING}
)
IMAGES = json_answer(schemas.ImagesResponse, "The images.")
IMAGES["content"]["text/event-stream"] = {
    "schema": {"type": "string", "description": "With stream=true: partial_image and completed events."}
}

# What each operation answers when it works: (method, path) → {status: response}.
SUCCESS: dict[tuple[str, str], dict[int, dict[str, Any]]] = {
    ("get", "/health"): {200: json_answer(schemas.Health, "The process is up.")},
    ("get", "/ready"): {200: json_answer(schemas.Readiness, "Ready: the database and storage answer.")},
    ("get", "/metrics"): {200: {"description": "Prometheus text.", "content": {"text/plain": {"schema": {}}}}},
    ("post", "/v1/images/generate"): {
        200: json_answer(schemas.NativeJob, "The job succeeded."),
        202: NATIVE_ACCEPTED,
    },
    ("post", "/v1/images/jobs"): {202: NATIVE_ACCEPTED},
    ("get", "/v1/images/jobs"): {200: json_answer(schemas.NativeJobList, "The caller's jobs, newest first.")},
    ("get", "/v1/images/models"): {200: json_answer(schemas.NativeModelList, "The models this key may use.")},
    ("get", "/v1/images/jobs/{job_id}"): {200: json_answer(schemas.NativeJobWithWebhooks, "The job.")},
    ("post", "/v1/images/jobs/{job_id}/cancel"): {200: json_answer(schemas.NativeJob, "The job, cancelled.")},
    ("delete", "/v1/images/jobs/{job_id}"): {200: json_answer(schemas.NativeJobDeleted, "Deleted.")},
    ("post", "/v1/vision"): {200: json_answer(schemas.VisionResult, "The model's answer.")},
    ("get", "/v1/usage"): {200: json_answer(schemas.Usage, "The key's usage and limits.")},
    ("post", "/v1/images/generations"): {200: IMAGES},
    ("post", "/v1/images/edits"): {200: IMAGES},
    ("post", "/v1/images/variations"): {200: IMAGES},
    ("get", "/v1/models"): {200: json_answer(schemas.OpenAIModelList, "The models this key may use.")},
    ("get", "/v1/models/{model_id}"): {200: json_answer(schemas.OpenAIModel, "The model.")},
    ("get", "/generated/{name}"): {
        200: binary((*IMAGE_TYPES, "image/gif"), "The image."),
        304: {"description": "Not modified (If-None-Match matched the ETag)."},
    },
    ("post", "/generate"): {
        200: json_answer(schemas.LegacyCompleted, "The images are saved."),
        202: json_answer(schemas.LegacyPending, "Still generating; the job goes on.", POLLING),
    },
    ("get", "/images/{image_id}"): {200: binary(IMAGE_TYPES, "The image's bytes.")},
    ("delete", "/images/{image_id}"): {200: json_answer(schemas.LegacyDeleted, "Deleted.")},
}

# The errors each operation can answer (in its surface's envelope).
ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("get", "/health"): (),
    ("get", "/ready"): (503,),
    ("get", "/metrics"): (401, 403, 404),
    ("post", "/v1/images/generate"): GENERATING,
    ("post", "/v1/images/jobs"): SUBMITTING,
    ("get", "/v1/images/jobs"): (400, *KEYED, 503),
    ("get", "/v1/images/models"): (*KEYED, 503),
    ("get", "/v1/images/jobs/{job_id}"): (*KEYED, 404, 503),
    ("post", "/v1/images/jobs/{job_id}/cancel"): (*KEYED, 404, 409, 503),
    ("delete", "/v1/images/jobs/{job_id}"): (*KEYED, 404, 409, 503),
    ("post", "/v1/vision"): (400, *KEYED, 413, 502, 503, 504),
    ("get", "/v1/usage"): (*KEYED, 503),
    ("post", "/v1/images/generations"): (*GENERATING, 500),
    ("post", "/v1/images/edits"): (*GENERATING, 500),
    ("post", "/v1/images/variations"): (*GENERATING, 500),
    ("get", "/v1/models"): KEYED,
    ("get", "/v1/models/{model_id}"): (*KEYED, 404),
    ("get", "/generated/{name}"): (404, 503),
    ("post", "/generate"): (400, *KEYED, 409, 413, 415, 422, 500, 503, 507),
    ("get", "/images/{image_id}"): (*KEYED, 404, 503),
    ("delete", "/images/{image_id}"): (*KEYED, 404, 503),
}


def install(app: FastAPI, settings: Settings) -> None:
    """Make app.openapi() answer the completed schema (built once, on the first request for it)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()  # FastAPI's, which it caches on app.openapi_schema: completed in place
        complete(schema, settings)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(schema: dict[str, Any], settings: Settings) -> None:
    """Add the answers, error envelopes, security and hand-parsed bodies FastAPI cannot see."""
    components = schema.setdefault("components", {})
    component_schemas = components.setdefault("schemas", {})
    component_schemas.update(_model_schemas())
    _security(schema, settings)
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            _complete_operation(operation, method, path)
    _request_bodies(schema["paths"])
    for unused in ("HTTPValidationError", "ValidationError"):
        component_schemas.pop(unused, None)


def _complete_operation(operation: dict[str, Any], method: str, path: str) -> None:
    responses: dict[str, Any] = {}
    for status, answer in SUCCESS.get((method, path), {}).items():
        responses[str(status)] = answer
    envelope = _envelope(path)
    for status in ERRORS.get((method, path), ()):
        responses[str(status)] = _error(status, envelope, method, path)
    # An operation missing from the tables keeps FastAPI's answers, less the 422 no surface sends (a test fails).
    fallback = {status: answer for status, answer in operation.get("responses", {}).items() if status != "422"}
    operation["responses"] = responses or fallback


def _error(status: int, envelope: type[BaseModel], method: str, path: str) -> dict[str, Any]:
    description = STATUS_TEXT.get(status, "An error.")
    if (method, path) == ("get", "/ready"):
        return json_answer(schemas.Readiness, "Not ready: names what is wrong.")
    headers = RETRY_AFTER if status in (429, 503) else None
    answer = json_answer(envelope, description, headers)
    if (method, path) == ("post", "/v1/images/generate") and status in FAILED_JOB_STATUSES:
        answer["description"] += " A job that failed while the request waited answers as the failed job."
        answer["content"]["application/json"]["schema"] = {"anyOf": [ref(envelope), ref(schemas.NativeFailedJob)]}
    return answer


def _envelope(path: str) -> type[BaseModel]:
    """The error shape of the surface that owns the path (as api.errors.SurfaceErrors decides it)."""
    if path.startswith(openai.PREFIXES):
        return schemas.OpenAIError
    if path.startswith(legacy.PREFIXES) and not path.startswith("/generated/"):
        return schemas.LegacyError
    return schemas.NativeError


def _model_schemas() -> dict[str, Any]:
    models: list[type[BaseModel]] = [*schemas.DOCUMENTED, EditFields, EditJsonBody, VariationFields]
    _, top = models_json_schema([(model, "serialization") for model in models], ref_template=REF)
    defs: dict[str, Any] = top.get("$defs", {})
    return defs


def _security(schema: dict[str, Any], settings: Settings) -> None:
    """FastAPI marks the routes that need a key (keys.auth.BEARER_SCHEME); add what only the settings know."""
    schemes = schema["components"].setdefault("securitySchemes", {})
    if settings.oig_anonymous_key is not None:  # keyless openai-image-gen calls act as that key
        for path, item in schema["paths"].items():
            if _envelope(path) is schemas.LegacyError:
                for operation in item.values():
                    operation["security"] = [*operation.get("security", []), {}]
    if settings.metrics_token is not None:
        schemes[METRICS_BEARER] = {"type": "http", "scheme": "bearer", "description": "IMAGEGATE_METRICS_TOKEN."}
        schema["paths"]["/metrics"]["get"]["security"] = [{METRICS_BEARER: []}]


def _request_bodies(paths: dict[str, Any]) -> None:
    """The bodies the surfaces parse themselves: multipart edits and variations, openai-image-gen's JSON."""
    edit_fields = _properties(EditFields)
    paths["/v1/images/edits"]["post"]["requestBody"] = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": _form(
                    {"image": {"type": "array", "items": _FILE, "description": "Images to edit (or image[])."}},
                    {"mask": {**_FILE, "description": "A PNG whose transparent areas mark what to change."}},
                    edit_fields,
                    required=["image", "prompt"],
                )
            },
            "application/json": {"schema": ref(EditJsonBody)},
        },
    }
    paths["/v1/images/variations"]["post"]["requestBody"] = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": _form({"image": {**_FILE, "description": "The image to vary."}}, _properties(VariationFields))
            }
        },
    }
    paths["/generate"]["post"]["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": ref(schemas.LegacyGenerateBody)}},
    }


_FILE = {"type": "string", "format": "binary"}


def _properties(model: type[BaseModel]) -> dict[str, Any]:
    properties: dict[str, Any] = model.model_json_schema(ref_template=REF)["properties"]
    return properties


def _form(*parts: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for part in parts:
        properties.update(part)
    return {"type": "object", "properties": properties, "required": required or ["image"]}
