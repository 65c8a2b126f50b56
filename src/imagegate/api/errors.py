"""Error rendering: domain errors, validation errors and HTTP errors as each surface's JSON shape."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from imagegate.db import is_unavailable
from imagegate.errors import DatabaseUnavailable, ImagegateError, InvalidRequest

logger = logging.getLogger(__name__)
DATABASE_RETRY_AFTER = "5"

Renderer = Callable[[Request, ImagegateError], Response]
Identify = Callable[[Request], Awaitable[None]]

HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class HttpError(ImagegateError):
    """An HTTP-level error (unknown route, wrong method, body too large)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers=headers)
        self.status = status
        self.code = HTTP_CODES.get(status, "http_error")


def native_error(error: ImagegateError, extra: dict[str, Any] | None = None) -> JSONResponse:
    """{"error": {"code", "message", "param"}, "detail": message} with the error's status and headers.

    `detail` is FastAPI's shape, which codex-image-service's clients read.
    """
    body: dict[str, Any] = {"code": error.code, "message": error.message, "param": error.param}
    body.update(extra or {})
    return JSONResponse({"error": body, "detail": error.message}, status_code=error.status, headers=error.headers)


def validation_to_error(exc: RequestValidationError) -> InvalidRequest:
    """The first complaint of a request validation as an InvalidRequest naming the field."""
    return errors_to_invalid(list(exc.errors()))


def errors_to_invalid(errors: list[Any]) -> InvalidRequest:
    """The first pydantic complaint as an InvalidRequest naming the field."""
    if not errors:
        return InvalidRequest()
    first = errors[0]
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    param = _dotted(location) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        return InvalidRequest("The body is not valid JSON.")
    if param is None:
        return InvalidRequest(
            "The body must be a JSON object with the request's fields, sent with Content-Type: application/json."
        )
    if kind == "extra_forbidden":
        return InvalidRequest(f"Unknown field {param!r}; remove it.", param=param)
    if kind == "missing":
        return InvalidRequest(f"{param} is required.", param=param)
    message = first.get("msg", "invalid value")
    return InvalidRequest(f"{param}: {message}." if param else f"{message}.", param=param)


def _dotted(parts: list[str]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


class SurfaceErrors:
    """Which error shape a path gets: each surface registers its prefixes; the native shape is the default."""

    def __init__(self) -> None:
        self._table: list[tuple[str, Renderer]] = []
        self._identify: list[tuple[str, Identify]] = []

    def register(self, prefix: str, renderer: Renderer) -> None:
        """Paths starting with prefix render errors with renderer (the longest prefix wins)."""
        self._table.append((prefix, renderer))
        self._table.sort(key=lambda item: len(item[0]), reverse=True)

    def identify_with(self, prefix: str, step: Identify) -> None:
        """Before an HTTP error under prefix is rendered, step finds who asked (no route ran its dependencies)."""
        self._identify.append((prefix, step))

    async def identify(self, request: Request) -> None:
        """Run the identifying step of the surface that owns the path, if it has one."""
        path = _app_path(request)
        for prefix, step in self._identify:
            if path.startswith(prefix):
                await step(request)
                return

    def render(self, request: Request, error: ImagegateError) -> Response:
        """The error in the shape of the surface that owns the path."""
        path = _app_path(request)
        for prefix, renderer in self._table:
            if path.startswith(prefix):
                return renderer(request, error)
        return native_error(error)


def _app_path(request: Request) -> str:
    return request.url.path[len(request.scope.get("root_path", "").rstrip("/")) :]


def install(app: FastAPI, surfaces: SurfaceErrors) -> None:
    """Register the handlers: every error leaves in the shape of the surface that was called."""

    def render(request: Request, error: ImagegateError) -> Response:
        return surfaces.render(request, error)

    async def on_domain(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ImagegateError)
        return render(request, exc)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return render(request, validation_to_error(exc))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"No such endpoint: {request.method} {request.url.path}."
        await surfaces.identify(request)
        return render(request, HttpError(exc.status_code, message, dict(exc.headers or {})))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        if is_unavailable(exc):
            # The cause is logged without its traceback or statement: during an outage every request fails alike.
            logger.error("database unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
            return render(request, DatabaseUnavailable(headers={"Retry-After": DATABASE_RETRY_AFTER}))
        logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return render(request, ImagegateError("Internal server error; the operator can find details in the log."))

    app.add_exception_handler(ImagegateError, on_domain)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    # Registered by class as well as for Exception: those handlers answer inside the middleware stack, so the
    # 503 carries the request id and is counted like any other answer.
    for kind in (SQLAlchemyError, OSError):
        app.add_exception_handler(kind, on_unexpected)
    app.add_exception_handler(Exception, on_unexpected)
