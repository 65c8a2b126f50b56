"""Admin pages that backends contribute (HasAdminPanel): shown in the layout, behind the login and CSRF check."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from markupsafe import Markup

from imagegate.admin import service
from imagegate.admin.web import Admin, csrf_ok, forbidden_csrf, page, prefix, read_form, redirect
from imagegate.backends.base import AdminPanel, PanelRequest
from imagegate.errors import NotFound
from imagegate.services import services

router = APIRouter(prefix="/admin/backends", include_in_schema=False)


def _panel(request: Request, name: str) -> AdminPanel:
    panels = services(request).panels
    if name not in panels:
        raise NotFound(f"No admin page for a backend named {name!r}.")
    return panels[name]


def _panel_request(request: Request, admin: Admin, name: str, form: dict[str, str] | None = None) -> PanelRequest:
    root = prefix(request)
    return PanelRequest(
        url=lambda path: root + path,
        action_url=lambda action: f"{root}/admin/backends/{name}/{action}",
        csrf=admin.csrf_token,
        form=form or {},
    )


@router.get("/{name}")
async def panel_page(name: str, request: Request, admin: Admin) -> Response:
    """A backend's own admin page, inside the admin layout."""
    panel = _panel(request, name)
    body = await panel.render(_panel_request(request, admin, name))
    return page(
        request,
        "panel.html",
        admin=admin,
        title=panel.title,
        active=f"/admin/backends/{name}",
        body=Markup(body),  # noqa: S704 - the backend renders (and escapes) its own HTML
        flash=await service.take_flash(admin=admin),
    )


@router.post("/{name}/{action}")
async def panel_action(name: str, action: str, request: Request, admin: Admin) -> Response:
    """A form on a backend's page: checked for the session's CSRF token, handled by the backend."""
    panel = _panel(request, name)
    form = await read_form(request)
    if not csrf_ok(admin, form):
        return forbidden_csrf(request, admin)
    handler = panel.actions.get(action)
    if handler is None:
        raise NotFound(f"No action {action!r} on this page.")
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    message = await handler(_panel_request(request, admin, name, fields))
    await service.set_flash(sessions=services(request).sessions, admin=admin, message=message)
    return redirect(request, f"/admin/backends/{name}")
