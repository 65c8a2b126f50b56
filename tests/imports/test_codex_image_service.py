"""The codex-image-service import's edge cases, on the service functions (the whole path: test_codex_image_service)."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select

from imagegate.imports.codex_image_service import NotASourceDatabase, parse_time, run_import
from imagegate.jobs.models import Job
from imagegate.keys.models import ApiKey
from tests.fakes.codex_image_service import ACTIVE_KEY, DISABLED_KEY, build_original, handle_of
from tests.helpers import Harness


async def imported(harness: Harness, database: Path, files: Path | None, dry_run: bool = False) -> list[str]:
    """Run the import into the harness's database; the report's lines."""
    report = await run_import(
        sessions=harness.app.state.services.sessions,
        storage=harness.app.state.services.storage,
        settings=harness.app.state.services.settings,
        database=database,
        files=files,
        dry_run=dry_run,
    )
    return report.lines


async def test_keys_only_and_a_taken_handle_gets_a_new_one(harness: Harness, tmp_path: Path) -> None:
    database, _generated, _files = build_original(tmp_path / "old")
    taken, _token = await harness.new_key("someone else")
    async with harness.app.state.services.sessions() as session, session.begin():
        row = await session.get(ApiKey, taken.id)
        assert row is not None
        row.handle = handle_of(ACTIVE_KEY)
    lines = await imported(harness, database, None)
    assert "4 history row(s) left behind" in lines[-1]
    async with harness.app.state.services.sessions() as session:
        keys = {k.token_hash: k for k in (await session.scalars(select(ApiKey))).all()}
        jobs = (await session.scalars(select(Job))).all()
    active = keys[hashlib.sha256(ACTIVE_KEY.encode()).hexdigest()]
    assert active.handle != handle_of(ACTIVE_KEY)  # that one was taken
    assert "vision" in active.scopes
    assert keys[hashlib.sha256(DISABLED_KEY.encode()).hexdigest()].handle == handle_of(DISABLED_KEY)
    assert jobs == []
    authorised = await harness.client.get("/v1/usage", headers={"Authorization": f"Bearer {ACTIVE_KEY}"})
    assert authorised.status_code == 200
    refused = await harness.client.get("/v1/usage", headers={"Authorization": f"Bearer {DISABLED_KEY}"})
    assert refused.status_code == 403


async def test_a_dry_run_writes_nothing(harness: Harness, tmp_path: Path) -> None:
    database, generated, _files = build_original(tmp_path / "old")
    lines = await imported(harness, database, generated, dry_run=True)
    assert any("would import" in line for line in lines)
    async with harness.app.state.services.sessions() as session:
        assert (await session.scalars(select(ApiKey))).all() == []
        assert (await session.scalars(select(Job))).all() == []
    assert not list((harness.app.state.services.settings.data_dir / "files").rglob("img_*"))


async def test_missing_files_and_past_expiry_keep_the_row_as_expired(harness: Harness, tmp_path: Path) -> None:
    database, generated, files = build_original(tmp_path / "old")
    (generated / next(iter(files))).unlink()
    connection = sqlite3.connect(database)
    connection.execute("UPDATE image_requests SET expires_at = '2020-01-01 00:00:00' WHERE id LIKE 'img_01%'")
    connection.execute("UPDATE image_requests SET status = 'running' WHERE id LIKE 'img_03%'")
    connection.commit()
    connection.close()
    lines = await imported(harness, database, generated)
    assert any("not found" in line for line in lines)
    async with harness.app.state.services.sessions() as session:
        statuses = {j.id[:6]: j.status for j in (await session.scalars(select(Job))).all()}
    assert statuses == {"img_00": "expired", "img_01": "expired", "img_02": "succeeded", "img_03": "failed"}


async def test_a_file_that_is_not_such_a_database_is_refused(harness: Harness, tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("just text, no database here " * 50)
    with pytest.raises(NotASourceDatabase, match="not an SQLite database"):
        await imported(harness, text, None)
    with pytest.raises(NotASourceDatabase, match="no such file"):
        await imported(harness, tmp_path / "missing.db", None)


def test_timestamps_in_the_forms_the_original_stored() -> None:
    assert parse_time("2026-05-20 10:00:00.123456").isoformat() == "2026-05-20T10:00:00.123456+00:00"  # type: ignore[union-attr]
    assert parse_time("2026-05-20T10:00:00Z").isoformat() == "2026-05-20T10:00:00+00:00"  # type: ignore[union-attr]
    assert parse_time(0).isoformat() == "1970-01-01T00:00:00+00:00"  # type: ignore[union-attr]
    assert parse_time(None) is None
    assert parse_time("yesterday") is None
