"""Finds backend types (entry points or 'module:Class') and routes model names to backends."""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, cast

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.backends.base import AdminPanel, Backend, BackendFactory, HasAdminPanel, HasCliCommands, UsesStore
from imagegate.backends.store import BackendStore
from imagegate.errors import UnknownModel
from imagegate.settings import Settings

if TYPE_CHECKING:
    import typer

ENTRY_POINT_GROUP = "imagegate.backends"
logger = logging.getLogger(__name__)


def load_backend_type(type_name: str) -> BackendFactory:
    """The factory for a backend type: a registered entry point name, or an import path 'pkg.mod:Class'."""
    if ":" in type_name:
        module_name, _, attribute = type_name.partition(":")
        return cast(BackendFactory, getattr(importlib.import_module(module_name), attribute))
    for entry in installed_types():
        if entry.name == type_name:
            return cast(BackendFactory, entry.load())
    known = sorted(e.name for e in installed_types())
    raise ValueError(f"unknown backend type {type_name!r}; installed types: {', '.join(known)}")


@functools.cache
def installed_types() -> tuple[EntryPoint, ...]:
    """The backend types installed packages register, read once per process (a scan of every package)."""
    return tuple(entry_points(group=ENTRY_POINT_GROUP))


def cli_command_groups() -> list[tuple[str, typer.Typer]]:
    """The command groups the installed backend types contribute (HasCliCommands), by group name."""
    groups: dict[str, typer.Typer] = {}
    for entry in installed_types():
        try:
            factory = entry.load()
        except Exception:  # a broken plugin must not take the whole command line down
            logger.warning("backend type %s could not be loaded for its commands", entry.name, exc_info=True)
            continue
        if isinstance(factory, type) and issubclass(factory, HasCliCommands):
            name, commands = factory.cli_commands()
            groups.setdefault(name, commands)
    return sorted(groups.items())


@dataclass(frozen=True)
class Route:
    """Where a model name goes."""

    model: str
    backend: str


class BackendSet:
    """The configured backends, their concurrency, and the model → backend routing."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        concurrency: Mapping[str, int],
        models: Mapping[str, str],
        default_model: str,
    ) -> None:
        self.backends = dict(backends)
        self.concurrency = dict(concurrency)
        self.models = dict(models)
        self.default_model = default_model

    @classmethod
    def from_settings(cls, settings: Settings) -> BackendSet:
        """Build every configured backend."""
        backends: dict[str, Backend] = {}
        for name, config in settings.backends.items():
            factory = load_backend_type(config.type)
            backends[name] = factory(name=name, options=config.options, settings=settings)
        concurrency = {name: config.concurrency for name, config in settings.backends.items()}
        return cls(backends, concurrency, settings.models, settings.default_model)

    def route(self, model: str | None) -> Route:
        """Resolve a requested model (None → the default) to its backend."""
        name = model or self.default_model
        backend = self.models.get(name)
        if backend is None:
            available = ", ".join(sorted(self.models))
            raise UnknownModel(f"Unknown model {name!r}. Available models: {available}.", param="model")
        return Route(model=name, backend=backend)

    async def start(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        """Hand each backend that keeps state (UsesStore) its own store."""
        for name, backend in self.backends.items():
            if isinstance(backend, UsesStore):
                await backend.start(BackendStore(sessions, name))

    def admin_panels(self) -> dict[str, AdminPanel]:
        """The admin panels backends contribute (HasAdminPanel), by backend name."""
        return {
            name: backend.admin_panel()
            for name, backend in sorted(self.backends.items())
            if isinstance(backend, HasAdminPanel)
        }

    async def aclose(self) -> None:
        """Close every backend."""
        for backend in self.backends.values():
            await backend.aclose()
