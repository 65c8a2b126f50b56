"""The interactive API docs at /docs, offline: Swagger UI from files shipped in the package, never a CDN."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

SWAGGER_UI = Path(__file__).parent / "static" / "swagger-ui"
ASSETS = "/docs/assets"
OPENAPI_URL = "/openapi.json"
# Swagger UI's defaults would fetch a validator badge from the internet; the docs must work without it.
PARAMETERS = {"validatorUrl": None, "persistAuthorization": False, "tryItOutEnabled": False}


def install(app: FastAPI) -> None:
    """Serve /docs and its assets; /redoc (FastAPI's second UI, CDN-only) leads to /docs."""
    app.mount(ASSETS, StaticFiles(directory=SWAGGER_UI), name="docs-assets")
    app.add_api_route("/docs", swagger_page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", to_docs, methods=["GET"], include_in_schema=False)


async def swagger_page(request: Request) -> HTMLResponse:
    """Swagger UI reading this server's /openapi.json, with an Authorize button for the API key."""
    root = request.scope.get("root_path", "").rstrip("/")
    return get_swagger_ui_html(
        openapi_url=f"{root}{OPENAPI_URL}",
        title="ImageGate API",
        swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS}/favicon-32x32.png",
        swagger_ui_parameters=PARAMETERS,
    )


async def to_docs(request: Request) -> RedirectResponse:
    """One docs page: /redoc, where FastAPI would load ReDoc from a CDN, opens /docs."""
    root = request.scope.get("root_path", "").rstrip("/")
    return RedirectResponse(f"{root}/docs", status_code=307)
