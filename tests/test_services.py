"""The app's services: opened by the lifespan, read through one typed accessor, never off app.state directly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from imagegate.app import create_app
from imagegate.services import find_services, services_of
from imagegate.settings import Settings

SOURCE = Path(__file__).parent.parent / "src" / "imagegate"
# Only these put the services on app.state, find them there, or share the state with the second listener.
STATE_OWNERS = {"services.py", "app.py", "api/legacy_listener.py"}


async def test_services_are_open_exactly_while_the_lifespan_runs(settings: Settings) -> None:
    app = create_app(settings)
    assert find_services(app) is None
    with pytest.raises(RuntimeError, match="lifespan has not started"):
        services_of(app)
    async with app.router.lifespan_context(app):
        opened = services_of(app)
        assert opened.settings is settings
        assert opened.sessions is opened.jobs.sessions
        assert opened.scheduler is not None


def test_no_module_reads_app_state_itself() -> None:
    readers = [
        str(path.relative_to(SOURCE))
        for path in SOURCE.rglob("*.py")
        if re.search(r"\bapp\.state\b", path.read_text()) and str(path.relative_to(SOURCE)) not in STATE_OWNERS
    ]
    assert readers == []
