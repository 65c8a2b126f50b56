"""The interactive API docs at /docs (Swagger UI) and /redoc (ReDoc), offline: files shipped in the package, never
a CDN."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

SWAGGER_UI = Path(__file__).parent / "static" / "swagger-ui"
REDOC = Path(__file__).parent / "static" / "redoc"
ASSETS = "/docs/assets"
REDOC_ASSETS = "/redoc/assets"
OPENAPI_URL = "/openapi.json"
# Swagger UI's defaults would fetch a validator badge from the internet; the docs must work without it.
PARAMETERS = {"validatorUrl": None, "persistAuthorization": False, "tryItOutEnabled": False}
# ReDoc's menu shows its maker's logo from a CDN, with no option to turn it off: the page may load images and
# data only from this server, so the browser never asks the internet (ReDoc then drops the broken logo).
REDOC_POLICY = "img-src 'self' data:; connect-src 'self'; font-src 'self' data:"


def install(app: FastAPI) -> None:
    """Serve /docs and /redoc with their assets."""
    app.mount(ASSETS, StaticFiles(directory=SWAGGER_UI), name="docs-assets")
    app.mount(REDOC_ASSETS, StaticFiles(directory=REDOC), name="redoc-assets")
    app.add_api_route("/docs", swagger_page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", redoc_page, methods=["GET"], include_in_schema=False)


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


async def redoc_page(request: Request) -> HTMLResponse:
    """ReDoc reading this server's /openapi.json: the whole API on one page, without web fonts from the internet."""
    root = request.scope.get("root_path", "").rstrip("/")
    page = get_redoc_html(
        openapi_url=f"{root}{OPENAPI_URL}",
        title="ImageGate API",
        redoc_js_url=f"{root}{REDOC_ASSETS}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS}/favicon-32x32.png",
        with_google_fonts=False,
    )
    page.headers["Content-Security-Policy"] = REDOC_POLICY
    return page
