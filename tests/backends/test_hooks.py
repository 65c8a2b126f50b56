"""The optional backend hooks, used by a backend the way a third-party plugin would: state, a panel, commands."""

from __future__ import annotations

import html
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from imagegate.backends.base import (
    AdminPanel,
    BackendRequest,
    BackendResult,
    HasAdminPanel,
    HasCliCommands,
    JobReporter,
    PanelRequest,
    RequestShape,
    UsesStore,
)
from imagegate.backends.codex import CodexBackend
from imagegate.backends.registry import cli_command_groups
from imagegate.backends.store import BackendStore
from imagegate.settings import BackendConfig, Settings
from tests.helpers import HarnessFactory, csrf_of, fake_backends, login


class CounterBackend:
    """A plugin backend with a page of its own: a counter kept in its store, bumped by a form."""

    def __init__(self, *, name: str, options: Mapping[str, Any], settings: Settings) -> None:
        self.name = name
        self.store: BackendStore | None = None

    async def start(self, store: BackendStore) -> None:
        """Keep the store."""
        self.store = store

    def admin_panel(self) -> AdminPanel:
        """A counter page."""

        async def render(request: PanelRequest) -> str:
            assert self.store is not None
            count = await self.store.get("count") or 0
            return (
                f'<h1>Counter</h1><p id="count">{count}</p><form method="post" action="{request.action_url("bump")}">'
                f'<input type="hidden" name="csrf" value="{html.escape(request.csrf)}"><button>Bump</button></form>'
            )

        async def bump(request: PanelRequest) -> str:
            assert self.store is not None
            await self.store.put("count", (await self.store.get("count") or 0) + 1)
            return "Bumped."

        return AdminPanel(title="Counter", render=render, actions={"bump": bump})

    def check(self, request: RequestShape) -> None:
        """Anything goes."""

    async def generate(self, request: BackendRequest, reporter: JobReporter) -> BackendResult:
        """Never asked in these tests."""
        raise NotImplementedError

    async def sweep(self) -> int:
        """Nothing to sweep."""
        return 0

    async def aclose(self) -> None:
        """Nothing held."""


async def test_a_plugin_backend_adds_an_admin_page_with_its_own_state(harness_with: HarnessFactory) -> None:
    backends = {**fake_backends(), "counter": BackendConfig(type="tests.backends.test_hooks:CounterBackend")}
    async with harness_with(backends=backends) as gate:
        assert (await login(gate.client)).status_code == 303
        overview = await gate.client.get("/admin")
        assert 'href="/admin/backends/counter"' in overview.text
        page = await gate.client.get("/admin/backends/counter")
        assert '<p id="count">0</p>' in page.text
        forged = await gate.client.post("/admin/backends/counter/bump", data={"csrf": "guess"})
        assert forged.status_code == 403
        bumped = await gate.client.post("/admin/backends/counter/bump", data={"csrf": csrf_of(page)})
        assert bumped.status_code == 303
        again = await gate.client.get("/admin/backends/counter")
        assert '<p id="count">1</p>' in again.text
        assert "Bumped." in again.text
        assert (
            await gate.client.post("/admin/backends/counter/nothing", data={"csrf": csrf_of(page)})
        ).status_code == 404
        assert (await gate.client.get("/admin/backends/fake")).status_code == 404  # no panel: no page


def test_the_built_in_codex_backend_uses_the_same_hooks() -> None:
    assert issubclass(CodexBackend, UsesStore)
    assert issubclass(CodexBackend, HasAdminPanel)
    assert issubclass(CodexBackend, HasCliCommands)
    assert "codex" in dict(cli_command_groups())


def test_a_backend_s_commands_load_before_the_cli_package() -> None:
    # In a fresh interpreter: within this test process something has usually imported imagegate.cli already.
    code = (
        "import typer, imagegate.backends.codex.cli as c, imagegate.cli as cli\n"
        "from imagegate.backends.registry import cli_command_groups\n"
        "root = typer.main.get_command(cli.app)\n"
        "listed = 'codex' in root.list_commands(typer.Context(root))\n"  # the root group imports groups lazily
        "print(listed and c.codex_app is dict(cli_command_groups())['codex'])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "True"), done.stderr
