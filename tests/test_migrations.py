"""The migrated schema is exactly what the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from imagegate.db import create_engine
from imagegate.migrations import alembic_config, upgrade
from imagegate.models import Base
from imagegate.settings import ModelPrice


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_migrations_match_the_models(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(_diff)
    finally:
        await engine.dispose()
    assert differences == []


def downgrade(database_url: str, revision: str) -> None:
    """Take the database back to an older revision."""
    command.downgrade(alembic_config(database_url), revision)


async def test_images_made_before_public_ids_get_one_each(database_url: str) -> None:
    await asyncio.to_thread(downgrade, database_url, "0007")
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO job (id, key_handle, status, model, backend, prompt, size, width, height, quality,"
                    " output_format, count, params, fair_tag, attempts, cancel_requested, image_count, logs,"
                    " created_at, expires_at) VALUES ('img_old', 'key_x', 'succeeded', 'demo', 'demo', 'p', 'auto',"
                    " 8, 8, 'auto', 'png', 2, '{}', 0, 1, false, 2, '', :now, :now)"
                ),
                {"now": datetime(2026, 1, 1)},
            )
            for index in range(2):
                await connection.execute(
                    text(
                        'INSERT INTO job_image (job_id, "index", name, storage_key, width, height, format, bytes,'
                        " sha256, created_at) VALUES ('img_old', :i, :name, :name, 8, 8, 'png', 1, 'x', :now)"
                    ),
                    {"i": index, "name": f"old-{index}.png", "now": datetime(2026, 1, 1)},
                )
        await asyncio.to_thread(upgrade, database_url)
        async with engine.connect() as connection:
            ids = (await connection.execute(text("SELECT public_id FROM job_image"))).scalars().all()
            surfaces = (await connection.execute(text("SELECT surface FROM job"))).scalars().all()
    finally:
        await engine.dispose()
    assert len(set(ids)) == 2
    assert all(uuid.UUID(value).version == 4 for value in ids)
    assert surfaces == ["native"]


async def test_the_vision_migration_gives_every_existing_key_the_scope(database_url: str) -> None:
    await asyncio.to_thread(downgrade, database_url, "0008")
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO api_key (handle, name, token_hash, enabled, created_at, scopes)"
                    " VALUES ('key_old', 'old', :hash, true, CURRENT_TIMESTAMP, :scopes)"
                ),
                {"hash": "0" * 64, "scopes": json.dumps(["generate", "read"])},
            )
        await asyncio.to_thread(upgrade, database_url)
        async with engine.connect() as connection:
            scopes = (await connection.execute(text("SELECT scopes FROM api_key"))).scalar_one()
            kinds = (await connection.execute(text("SELECT count(*) FROM job WHERE kind <> 'image'"))).scalar_one()
    finally:
        await engine.dispose()
    assert (json.loads(scopes) if isinstance(scopes, str) else scopes) == ["generate", "read", "vision"]
    assert kinds == 0


async def test_the_webhook_migration_gives_every_existing_key_a_signing_secret(database_url: str) -> None:
    await asyncio.to_thread(downgrade, database_url, "0009")
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            for handle in ("key_old1", "key_old2"):
                await connection.execute(
                    text(
                        "INSERT INTO api_key (handle, name, token_hash, enabled, created_at, scopes)"
                        " VALUES (:handle, 'old', :hash, true, CURRENT_TIMESTAMP, '[]')"
                    ),
                    {"handle": handle, "hash": handle.ljust(64, "0")},
                )
        await asyncio.to_thread(upgrade, database_url)
        async with engine.connect() as connection:
            secrets = (await connection.execute(text("SELECT webhook_secret FROM api_key"))).scalars().all()
    finally:
        await engine.dispose()
    assert len(set(secrets)) == 2
    assert all(secret.startswith("whsec_") for secret in secrets)


OLD_JOB = (
    "INSERT INTO job (id, key_handle, kind, status, model, backend, prompt, size, width, height, quality,"
    " output_format, count, params, fair_tag, attempts, cancel_requested, image_count, logs, surface,"
    " created_at, expires_at) VALUES (:id, 'key_x', :kind, 'failed', 'demo', 'demo', 'p', 'auto',"
    " 8, 8, 'auto', 'png', 1, :params, 0, 1, false, 0, '', 'openai', :now, :now)"
)


async def _insert_old_jobs(connection: Any, jobs: dict[str, tuple[str, dict[str, Any]]]) -> None:
    for job_id, (kind, params) in jobs.items():
        await connection.execute(
            text(OLD_JOB), {"id": job_id, "kind": kind, "params": json.dumps(params), "now": datetime(2026, 1, 1)}
        )
    await connection.execute(
        text(
            'INSERT INTO job_input (job_id, "index", role, storage_key, width, height, format, bytes, sha256)'
            " VALUES ('img_edit', 0, 'reference', 'inputs/x', 8, 8, 'png', 1, 'x')"
        )
    )


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def test_operation_result_and_retry_after_move_out_of_params_and_back(database_url: str) -> None:
    await asyncio.to_thread(downgrade, database_url, "0010")
    old_jobs: dict[str, tuple[str, dict[str, Any]]] = {
        "img_variation": ("image", {"operation": "variation", "user": "u", "retry_after": "30"}),
        "img_edit": ("image", {"result": {"revised_prompt": "R"}}),
        "img_plain": ("image", {"style": "vivid"}),
        "vis_read": ("vision", {"operation": "vision", "inputs": [], "result": {"text": "an answer"}}),
    }
    engine = create_engine(database_url)
    query = text("SELECT id, operation, params, result, error_retry_after FROM job ORDER BY id")
    try:
        async with engine.begin() as connection:
            await _insert_old_jobs(connection, old_jobs)
        await asyncio.to_thread(upgrade, database_url)
        async with engine.connect() as connection:
            rows = {row.id: row for row in (await connection.execute(query)).all()}
        await asyncio.to_thread(downgrade, database_url, "0010")
        async with engine.connect() as connection:
            params_query = text("SELECT id, params FROM job")
            downgraded = {row.id: _json(row.params) for row in (await connection.execute(params_query)).all()}
    finally:
        await engine.dispose()
    moved = {
        job_id: (row.operation, _json(row.params), _json(row.result), row.error_retry_after)
        for job_id, row in rows.items()
    }
    assert moved == {
        "img_edit": ("edit", {}, {"revised_prompt": "R"}, None),
        "img_plain": ("generate", {"style": "vivid"}, None, None),
        "img_variation": ("variation", {"user": "u"}, None, "30"),
        "vis_read": ("vision", {"inputs": []}, {"text": "an answer"}, None),
    }
    assert downgraded["img_variation"] == {"operation": "variation", "user": "u", "retry_after": "30"}
    assert downgraded["img_edit"] == {"operation": "edit", "result": {"revised_prompt": "R"}}


OLD_FINISHED_JOB = (
    "INSERT INTO job (id, key_handle, kind, status, model, backend, prompt, size, width, height, quality,"
    " output_format, count, params, result, fair_tag, attempts, cancel_requested, image_count, logs, surface,"
    " operation, created_at, finished_at, expires_at) VALUES (:id, 'key_x', 'image', 'succeeded', :model, 'openai',"
    " 'p', 'auto', 8, 8, 'auto', 'png', 1, '{}', :result, 0, 1, false, 1, '', 'native', 'generate', :now, :now, :now)"
)
REPORTED_USAGE = {"input_tokens": 0, "output_tokens": 5_000}


async def test_the_cost_migration_prices_finished_jobs_with_the_server_s_prices(database_url: str) -> None:
    await asyncio.to_thread(downgrade, database_url, "0015")
    old_jobs = {
        "img_priced": ("gpt-image-1", {"usage": REPORTED_USAGE}),  # the default table: $40 per million out
        "img_no_usage": ("gpt-image-1", {"revised_prompt": "R"}),
        "img_no_price": ("other-model", {"usage": REPORTED_USAGE}),
        "img_no_result": ("gpt-image-1", None),
    }
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            for job_id, (model, result) in old_jobs.items():
                values = {"id": job_id, "model": model, "now": datetime(2026, 1, 1)}
                await connection.execute(text(OLD_FINISHED_JOB), {**values, "result": json.dumps(result)})
        await asyncio.to_thread(upgrade, database_url)
        async with engine.connect() as connection:
            query = text("SELECT id, cost_usd FROM job")
            costs = {row.id: row.cost_usd for row in (await connection.execute(query)).all()}
        await asyncio.to_thread(downgrade, database_url, "0015")
        prices = {"other-model": ModelPrice(output_image=10.0)}
        await asyncio.to_thread(upgrade, database_url, "head", prices)
        async with engine.connect() as connection:
            repriced = {row.id: row.cost_usd for row in (await connection.execute(query)).all()}
    finally:
        await engine.dispose()
    assert costs == {"img_priced": 0.2, "img_no_usage": None, "img_no_price": None, "img_no_result": None}
    assert repriced == {"img_priced": None, "img_no_usage": None, "img_no_price": 0.05, "img_no_result": None}
