"""The running app's services, typed: opened once by the lifespan and read through one accessor.

Route code never reads `request.app.state` itself: it asks for `services(request)` (or the `AppServices`
dependency) and gets a frozen Services whose every field has a type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from imagegate.backends.base import AdminPanel
    from imagegate.backends.registry import BackendSet
    from imagegate.jobs.notify import Listener
    from imagegate.jobs.scheduler import Scheduler
    from imagegate.jobs.service import JobContext
    from imagegate.keys.cache import KeyCache
    from imagegate.metrics import Metrics
    from imagegate.settings import Settings
    from imagegate.storage import Storage


@dataclass(frozen=True)
class Services:
    """Everything the app opened: the database, storage, backends, job context, scheduler, metrics."""

    settings: Settings
    metrics: Metrics
    engine: AsyncEngine
    jobs: JobContext
    key_cache: KeyCache
    scheduler: Scheduler | None = None
    listener: Listener | None = None  # LISTEN for other processes' hand-offs (PostgreSQL only)
    # The admin pages backends contribute (HasAdminPanel), by backend name.
    panels: dict[str, AdminPanel] = field(default_factory=dict)

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        """The session factory every verb that opens its own transaction takes."""
        return self.jobs.sessions

    @property
    def storage(self) -> Storage:
        """Where images and inputs are kept."""
        return self.jobs.storage

    @property
    def backends(self) -> BackendSet:
        """The configured backends and the model routes."""
        return self.jobs.backends


def services_of(app: Any) -> Services:
    """The services of an app whose lifespan has started (RuntimeError before that)."""
    found = find_services(app)
    if found is None:
        raise RuntimeError("the app's lifespan has not started: its services are not open")
    return found


def find_services(app: Any) -> Services | None:
    """The services of an app, or None while its lifespan has not opened them."""
    found: Services | None = getattr(app.state, "services", None)
    return found


def services(request: Request) -> Services:
    """The services of the app serving this request."""
    return services_of(request.app)


AppServices = Annotated[Services, Depends(services)]
