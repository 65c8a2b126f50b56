"""The Codex backend's admin panel: every configured account with its quota, token health, rest and figures."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from jinja2 import Environment, FileSystemLoader, select_autoescape

from imagegate.backends import usage
from imagegate.backends.base import AdminPanel, PanelRequest
from imagegate.backends.codex import process, tokens
from imagegate.backends.codex.accounts import Dispatch
from imagegate.backends.codex.quota import Quota
from imagegate.db import utcnow
from imagegate.errors import InvalidRequest

if TYPE_CHECKING:
    from imagegate.backends.codex import CodexBackend

TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(default=True)
)
DISPATCH_MODES = ("primary-first", "round-robin")


@dataclass(frozen=True)
class AccountView:
    """One account as the page shows it (never a token)."""

    name: str
    home: str
    state: str
    quota: Quota
    health: tokens.TokenHealth
    success_rate_24h: str
    windows: dict[str, usage.WindowStats]


def accounts_panel(backend: CodexBackend) -> AdminPanel:
    """The panel, its dispatch switch and its rest-clearing action."""

    async def render(request: PanelRequest) -> str:
        await backend.sync()
        views = await account_views(backend)
        audit = await backend.store.events("token", limit=30) if backend.store else []
        return TEMPLATES.get_template("accounts.html").render(
            backend=backend.name,
            accounts=views,
            audit=audit,
            dispatch=backend.pool.dispatch,
            configured=backend.options.dispatch,
            modes=DISPATCH_MODES,
            min_quota=backend.options.min_quota_percent,
            csrf=request.csrf,
            action=request.action_url,
        )

    async def set_dispatch(request: PanelRequest) -> str:
        mode = request.form.get("dispatch", "")
        if mode in DISPATCH_MODES:
            await backend.set_dispatch(cast(Dispatch, mode))
            return f"Codex dispatch is now {mode}, in every process."
        raise InvalidRequest(f"Dispatch must be one of {', '.join(DISPATCH_MODES)}.", param="dispatch")

    async def clear_rest(request: PanelRequest) -> str:
        name = request.form.get("account", "")
        account = next((a for a in backend.pool.accounts if a.name == name), None)
        if account is None:
            raise InvalidRequest(f"No Codex account {name!r}.", param="account")
        await backend.wake(account)
        return f"Account {name} is no longer resting."

    return AdminPanel(
        title="Codex accounts" if backend.name == "codex" else f"Codex accounts ({backend.name})",
        render=render,
        actions={"dispatch": set_dispatch, "clear-rest": clear_rest},
    )


async def account_views(backend: CodexBackend) -> list[AccountView]:
    """Every configured account, used or not."""
    now = utcnow()
    quotas = await backend.quotas()
    stats = {s.subject: s.windows for s in await backend.store.usage(now=now)} if backend.store else {}
    views = []
    for account in backend.pool.accounts:
        health = await asyncio.to_thread(tokens.health, account.home, now)
        windows = stats.get(account.name) or {label: usage.WindowStats() for label in usage.WINDOWS}
        day = windows["24h"]
        rate = f"{100 * day.successes / day.requests:.0f} %" if day.requests else "-"
        if account.resting(now) and account.exhausted_until:
            state = f"resting until {account.exhausted_until:%Y-%m-%d %H:%M} UTC"
        elif account.lock_fd is not None or await asyncio.to_thread(process.running, account.run_record):
            state = "running"
        else:
            state = "free"
        views.append(AccountView(account.name, str(account.home), state, quotas[account.name], health, rate, windows))
    return views
