"""A static check (run by mypy, nothing at run time) that every built-in backend satisfies the Protocols."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imagegate.backends.base import Backend, BackendFactory, Describer, HasAdminPanel, HasCliCommands, UsesStore
    from imagegate.backends.codex import CodexBackend
    from imagegate.backends.demo import DemoBackend
    from imagegate.backends.openai import OpenAIBackend

    def _built_in_backends_satisfy_the_protocols(demo: DemoBackend, openai: OpenAIBackend, codex: CodexBackend) -> None:
        backends: list[Backend] = [demo, openai, codex]
        factories: list[BackendFactory] = [DemoBackend, OpenAIBackend, CodexBackend]
        stateful: list[UsesStore] = [codex]
        panels: list[HasAdminPanel] = [codex]
        commands: list[type[HasCliCommands]] = [CodexBackend]
        readers: list[Describer] = [demo, openai, codex]
        del backends, factories, stateful, panels, commands, readers
