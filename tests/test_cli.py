"""The imagegate command: keys, db upgrade, cleanup and expiry parsing."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from imagegate.cli import app, parse_expiry
from imagegate.client import output_paths

runner = CliRunner()


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment pointing the CLI at the test database."""
    return {"IMAGEGATE_DATABASE_URL": database_url, "IMAGEGATE_DATA_DIR": str(tmp_path / "data")}


def invoke(env: dict[str, str], *args: str) -> str:
    """Run the CLI and return its output; fails the test on a non-zero exit."""
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_key_lifecycle(env: dict[str, str]) -> None:
    created = invoke(env, "keys", "create", "ci-bot", "--expires", "30d")
    token = created.strip().splitlines()[-1]
    handle = re.search(r"key_[0-9a-f]{12}", created)
    assert handle is not None
    assert token.startswith("ig_")
    listed = invoke(env, "keys", "list")
    assert handle[0] in listed
    assert "ci-bot" in listed
    assert "enabled" in listed
    assert token not in listed
    invoke(env, "keys", "disable", handle[0])
    assert "disabled" in invoke(env, "keys", "list")
    invoke(env, "keys", "enable", handle[0])
    invoke(env, "keys", "delete", handle[0])
    assert handle[0] not in invoke(env, "keys", "list")


def test_unknown_handle_is_a_clear_error(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["keys", "disable", "key_000000000000"], env=env)
    assert result.exit_code == 1
    assert "No key with handle" in result.output


def test_db_upgrade_and_cleanup(env: dict[str, str]) -> None:
    assert "up to date" in invoke(env, "db", "upgrade")
    assert "Expired 0 job(s)" in invoke(env, "cleanup")


def test_bad_configuration_is_reported(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["keys", "list"], env={**env, "IMAGEGATE_DEFAULT_MODEL": "nope"})
    assert result.exit_code == 2
    assert "Configuration error" in result.output


def test_parse_expiry() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_expiry("30d", now) == now + timedelta(days=30)
    assert parse_expiry("12h", now) == now + timedelta(hours=12)
    assert parse_expiry("2027-02-01", now) == datetime(2027, 2, 1, tzinfo=UTC)
    with pytest.raises(typer.BadParameter):
        parse_expiry("soon", now)
    with pytest.raises(typer.BadParameter):
        parse_expiry("2020-01-01", now)


def test_output_paths_number_extra_images() -> None:
    assert output_paths(Path("out.png"), 3) == [Path("out.png"), Path("out-2.png"), Path("out-3.png")]
