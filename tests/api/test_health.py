"""Liveness and readiness."""

from __future__ import annotations

import shutil

from tests.helpers import Harness


async def test_health_answers_without_touching_anything(harness: Harness) -> None:
    await harness.app.state.services.engine.dispose()
    response = await harness.client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_ready_checks_database_and_storage(harness: Harness) -> None:
    response = await harness.client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "database": "ok", "storage": "ok", "backends": "ok"}


async def test_not_ready_when_storage_is_unwritable(harness: Harness) -> None:
    root = harness.app.state.services.storage.root
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    root.write_text("a file where the folder should be")
    response = await harness.client.get("/ready")
    assert response.status_code == 503
    assert response.json()["storage"] == "unwritable"
    assert response.json()["database"] == "ok"


async def test_the_bare_address_leads_to_the_admin_ui(harness: Harness) -> None:
    response = await harness.client.get("/")
    assert response.status_code == 307
    assert response.headers["location"] == "/admin"
