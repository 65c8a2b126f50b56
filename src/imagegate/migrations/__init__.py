"""Alembic migrations; `upgrade(database_url)` brings a database to the newest schema."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config

if TYPE_CHECKING:
    from imagegate.settings import ModelPrice

HERE = Path(__file__).parent


def alembic_config(database_url: str, prices: Mapping[str, ModelPrice] | None = None) -> Config:
    """An Alembic Config pointing at the packaged migrations and the given database; a data migration that prices
    jobs uses `prices` (the server's IMAGEGATE_PRICES), else the default table."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["prices"] = prices
    return config


def upgrade(database_url: str, revision: str = "head", prices: Mapping[str, ModelPrice] | None = None) -> None:
    """Apply migrations up to `revision` (blocking; call from a thread inside an event loop)."""
    command.upgrade(alembic_config(database_url, prices), revision)


async def upgrade_async(database_url: str, prices: Mapping[str, ModelPrice] | None = None) -> None:
    """Apply migrations without blocking the running event loop."""
    await asyncio.to_thread(upgrade, database_url, "head", prices)
