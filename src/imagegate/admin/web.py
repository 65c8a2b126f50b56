"""The admin UI's plumbing: templates and filters, the session dependency, CSRF, pages and redirects."""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import FormData
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagegate.admin import service
from imagegate.admin.models import AdminSession
from imagegate.db import is_unavailable
from imagegate.errors import ImagegateError
from imagegate.services import find_services, services

HERE = Path(__file__).parent
COOKIE = "imagegate_admin"
LOGIN_CSRF_COOKIE = "imagegate_login_csrf"
NAV = [
    ("/admin", "Overview"),
    ("/admin/keys", "Keys"),
    ("/admin/history", "History"),
    ("/admin/playground", "Playground"),
    ("/admin/maintenance", "Maintenance"),
    ("/admin/audit", "Audit"),
    ("/admin/status", "Status"),
]


def _filesize(value: int | None) -> str:
    size = float(value or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def duration(seconds: float) -> str:
    """A duration in words: 'hour', '2 hours', '90 minutes', '7 days' (the largest unit that divides it)."""
    whole = round(seconds)
    for unit, size in UNITS:
        if whole >= size and whole % size == 0:
            count = whole // size
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds:g} seconds"


def took(job: Any) -> str:
    """How long a job ran, from its start to its end ('-' before it starts; 'running' until it ends)."""
    if job.started_at is None:
        return "-"
    if job.finished_at is None:
        return "running"
    seconds = max((job.finished_at - job.started_at).total_seconds(), 0.0)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


DELETED_BY = {
    "caller": ("by its caller", "by its caller"),
    "admin": ("by the operator", "by the operator in the admin UI"),
    "cli": ("by the operator", "by the operator with imagegate jobs delete"),
}


def deleted_by(job: Any, short: bool = False) -> str:
    """Who deleted a job, in words ('' for a job deleted before that was recorded)."""
    words = DELETED_BY.get(job.deleted_by or "")
    return "" if words is None else words[0 if short else 1]


def detail_items(detail: Mapping[str, Any]) -> list[tuple[str, str]]:
    """An audit event's detail as words: 'daily image quota: 50', lists joined, empty values left out."""
    return [(name.replace("_", " "), _detail_text(value)) for name, value in detail.items() if value not in (None, "")]


def _detail_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_detail_text(item) for item in value) or "none"
    if isinstance(value, Mapping):
        return "; ".join(f"{k.replace('_', ' ')} {_detail_text(v)}" for k, v in value.items())
    return str(value)


templates = Jinja2Templates(directory=HERE / "templates")


def dollars(value: float | None) -> str:
    """An estimated cost as $0.0420, or a dash when there is none."""
    return "-" if value is None else f"${value:,.4f}"


templates.env.filters["dollars"] = dollars
templates.env.filters["filesize"] = _filesize
templates.env.filters["when"] = _when
templates.env.filters["duration"] = duration
templates.env.filters["took"] = took
templates.env.filters["deleted_by"] = deleted_by
templates.env.filters["detail_items"] = detail_items


class LoginRequired(Exception):
    """No live admin session: the browser goes to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def prefix(request: Request) -> str:
    """The URL prefix the app is served under (behind a reverse proxy)."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


def is_https(request: Request) -> bool:
    """Served over https (directly, or per the proxy headers uvicorn trusts)."""
    return request.url.scheme == "https"


async def require_admin(request: Request) -> AdminSession:
    """The live admin session of this browser, or a redirect to the login page."""
    found = await service.find_session(sessions=services(request).sessions, cookie=request.cookies.get(COOKIE))
    if found is None:
        raise LoginRequired(request.url.path[len(prefix(request)) :] or "/admin")
    request.state.admin = found  # an error page for this request keeps the navigation
    return found


async def identify_admin(request: Request) -> None:
    """Find this browser's admin session for an error page of a path no route took, so it keeps the navigation."""
    if getattr(request.state, "admin", None) is not None:
        return
    cookie = request.cookies.get(COOKIE)
    try:
        request.state.admin = await service.find_session(sessions=services(request).sessions, cookie=cookie)
    except (SQLAlchemyError, OSError) as error:
        if not is_unavailable(error):
            raise
        request.state.admin = None  # during an outage the error page still renders, without the navigation


Admin = Annotated[AdminSession, Depends(require_admin)]


def page(request: Request, template: str, *, admin: AdminSession | None, status: int = 200, **context: Any) -> Response:
    """Render a page with the layout's context."""
    nav = list(NAV)
    opened = find_services(request.app)
    for name, panel in (opened.panels if opened else {}).items():  # pages backends contribute
        nav.insert(-1, (f"/admin/backends/{name}", panel.title))
    root = prefix(request)
    base: dict[str, Any] = {
        "admin": admin,
        "nav": nav,
        "active": context.pop("active", None),
        "url": lambda path: root + path,
        "title": context.get("title", "Admin"),
    }
    return templates.TemplateResponse(request, template, {**base, **context}, status_code=status)


def redirect(request: Request, path: str) -> RedirectResponse:
    """303 to a path of this app (POST → GET)."""
    return RedirectResponse(prefix(request) + path, status_code=303)


def forbidden_csrf(request: Request, admin: AdminSession | None) -> Response:
    """A form without this session's token: refused, with a way back."""
    return page(
        request,
        "error.html",
        admin=admin,
        status=403,
        title="Refused",
        heading="Refused",
        message="This form has expired or did not come from this admin page; reload it and try again.",
    )


def error_message(error: ImagegateError) -> str:
    """What an admin page says about an error: 4xx and outages their message, others a generic line."""
    # Outages say what they are (their messages are ours, never a provider's or a traceback).
    said = error.status < 500 or error.status in (503, 507)
    return error.message if said else "Something went wrong; the server log has the details."


def error_page(request: Request, error: ImagegateError) -> Response:
    """A domain error as an admin page (4xx keep their message; others stay generic)."""
    message = error_message(error)
    response = page(
        request,
        "error.html",
        admin=getattr(request.state, "admin", None),
        status=error.status,
        title=str(error.status),
        heading=str(error.status),
        message=message,
    )
    response.headers.update(error.headers)
    return response


def chart_svg(points: list[tuple[date, int]]) -> str:
    """An inline SVG bar chart of images per day (no script, no CDN)."""
    width, height, pad = 560, 160, 24
    bar = (width - 2 * pad) / max(len(points), 1)
    top = max((count for _day, count in points), default=0) or 1
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="Images per day">']
    for index, (day, count) in enumerate(points):
        h = (height - 2 * pad) * count / top
        x, y = pad + index * bar, height - pad - h
        parts.append(
            f'<rect x="{x + 2:.1f}" y="{y:.1f}" width="{bar - 4:.1f}" height="{h:.1f}">'
            f"<title>{day.isoformat()}: {count}</title></rect>"
        )
        if count:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle">{count}</text>')
        parts.append(
            f'<text x="{x + bar / 2:.1f}" y="{height - 8}" text-anchor="middle">'
            f"{html.escape(day.strftime('%d %b'))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def form_value(form: Mapping[str, Any], name: str) -> str:
    """A text field, stripped ('' when absent or not text)."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def cookie_options(request: Request) -> dict[str, Any]:
    """HttpOnly, SameSite=Strict, Secure over https, scoped to the admin pages."""
    return {"httponly": True, "samesite": "strict", "secure": is_https(request), "path": prefix(request) + "/admin"}


async def read_form(request: Request) -> FormData:
    """The posted form (bounded in files and fields)."""
    return await request.form(max_files=20, max_fields=50)


def csrf_ok(admin: AdminSession, form: FormData) -> bool:
    """The form carries this session's CSRF token."""
    return service.csrf_ok(admin, form_value(form, "csrf"))


# No inline script or style, no framing: the pages need none, so an injected one cannot run. The one script
# (admin.js: copy buttons) is a static file; every page works without it.
ADMIN_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src * data: blob:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
ADMIN_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", ADMIN_CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
REPLACED = {name for name, _value in ADMIN_HEADERS}


class AdminHeadersMiddleware:
    """Every admin response (pages, redirects, errors, input images; not the static CSS) is uncacheable,
    unframeable and under a strict Content-Security-Policy."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_admin_page(scope):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in REPLACED]
                message["headers"] = kept + ADMIN_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _is_admin_page(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "").rstrip("/")
    if root and path.startswith(root):
        path = path[len(root) :]
    return (path == "/admin" or path.startswith("/admin/")) and not path.startswith("/admin/static/")


def confirmed(form: FormData) -> bool:
    """The form was posted from a confirmation page (a destructive action's second step)."""
    return form_value(form, "confirm") == "yes"


def confirm_page(
    request: Request, admin: AdminSession, *, heading: str, message: str, action: str, button: str, back: str
) -> Response:
    """The step before a destructive action: says what will go and posts the same form again, confirmed."""
    return page(
        request,
        "confirm.html",
        admin=admin,
        title=heading,
        heading=heading,
        message=message,
        action=action,
        button=button,
        back=back,
    )
