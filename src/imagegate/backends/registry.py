"""Finds backend types (entry points or 'module:Class') and routes model names to backends."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import cast

from imagegate.backends.base import Backend, BackendFactory
from imagegate.errors import UnknownModel
from imagegate.settings import Settings

ENTRY_POINT_GROUP = "imagegate.backends"


def load_backend_type(type_name: str) -> BackendFactory:
    """The factory for a backend type: a registered entry point name, or an import path 'pkg.mod:Class'."""
    if ":" in type_name:
        module_name, _, attribute = type_name.partition(":")
        return cast(BackendFactory, getattr(importlib.import_module(module_name), attribute))
    found = entry_points(group=ENTRY_POINT_GROUP, name=type_name)
    for entry in found:
        return cast(BackendFactory, entry.load())
    known = sorted(e.name for e in entry_points(group=ENTRY_POINT_GROUP))
    raise ValueError(f"unknown backend type {type_name!r}; installed types: {', '.join(known)}")


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

    async def aclose(self) -> None:
        """Close every backend."""
        for backend in self.backends.values():
            await backend.aclose()
