"""The imagegate command: keys, db upgrade, cleanup and expiry parsing."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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
    invoke(env, "keys", "delete", handle[0], "--yes")
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


def test_limits_rotation_and_audit_from_the_command_line(env: dict[str, str]) -> None:
    env = {**env, "IMAGEGATE_MODELS": '{"demo": "demo", "sketch": "demo"}'}
    created = invoke(
        env,
        "keys",
        "create",
        "limited",
        "--models",
        "sketch,demo",
        "--scopes",
        "generate,read",
        "--rate-limit",
        "30",
        "--daily-quota",
        "5",
        "--max-concurrent",
        "2",
    )
    handle = re.search(r"key_[0-9a-f]{12}", created)
    assert handle is not None
    assert "models:          sketch, demo" in created
    assert "scopes:          generate, read" in created
    assert "rate limit:      30 requests/minute" in created
    assert "monthly quota:   unlimited" in created
    updated = invoke(
        env, "keys", "update", handle[0], "--daily-quota", "none", "--monthly-quota", "100", "--models", "all"
    )
    assert "daily quota:     unlimited" in updated
    assert "monthly quota:   100 images" in updated
    assert "models:          all" in updated
    old_token = created.strip().splitlines()[-1]
    rotated = invoke(env, "keys", "rotate", handle[0], "--grace", "2h")
    new_token = rotated.strip().splitlines()[-1]
    assert new_token.startswith("ig_")
    assert new_token != old_token
    assert "previous secret: valid until" in invoke(env, "keys", "show", handle[0])
    log = invoke(env, "audit", "--handle", handle[0])
    for action in ("key.create", "key.update", "key.rotate"):
        assert action in log
    assert "ig_" not in log
    assert "key.rotate" not in invoke(env, "audit", "--action", "key.create")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["keys", "create", "x", "--rate-limit", "0"], "at least 1"),
        (["keys", "create", "x", "--rate-limit", "²"], "whole number"),
        (["keys", "create", "x", "--daily-quota", "1" + "0" * 20], "whole number"),
        (["keys", "create", "x", "--expires", "99999999999999999999d"], "too long"),
        (["keys", "rotate", "key_000000000000", "--grace", "99999999999w"], "too long"),
        (["keys", "create", "x", "--scopes", "generate,fly"], "Unknown scope"),
        (["keys", "rotate", "key_000000000000", "--grace", "soon"], "duration"),
        (["keys", "update", "key_000000000000"], "nothing to change"),
        (
            ["keys", "create", "x", "--models", "demo,dall-e-9"],
            "'dall-e-9' is not a routed model or backend; known: demo",
        ),
        (["keys", "update", "key_000000000000", "--models", "nope"], "'nope' is not a routed model"),
    ],
)
def test_bad_key_options_are_explained(env: dict[str, str], args: list[str], message: str) -> None:
    result = runner.invoke(app, args, env=env)
    assert result.exit_code != 0
    assert message in result.output


def test_commands_name_the_database_they_use(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["keys", "list"], env=env)
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("Database: ")


def test_a_missing_sqlite_database_is_refused_not_created(tmp_path: Path) -> None:
    elsewhere = tmp_path / "another-folder"
    env = {"IMAGEGATE_DATA_DIR": str(elsewhere), "IMAGEGATE_DATABASE_URL": ""}
    for args in (["keys", "create", "lost"], ["keys", "list"], ["audit"], ["cleanup"]):
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 2, result.output
        assert f"there is no ImageGate database at {(elsewhere / 'imagegate.db').resolve()}" in result.stderr
        assert "--config" in result.stderr
        assert "IMAGEGATE_DATA_DIR" in result.stderr
    assert not (elsewhere / "imagegate.db").exists()


def test_db_upgrade_creates_the_database_that_keys_then_use(tmp_path: Path) -> None:
    env = {"IMAGEGATE_DATA_DIR": str(tmp_path / "fresh"), "IMAGEGATE_DATABASE_URL": ""}
    assert "up to date" in invoke(env, "db", "upgrade")
    assert "ig_" in invoke(env, "keys", "create", "first")


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert re.fullmatch(r"imagegate \d+\.\d+\.\d+\S*\n", result.output)


def test_deleting_a_key_asks_first(env: dict[str, str]) -> None:
    handle = re.search(r"key_[0-9a-f]{12}", invoke(env, "keys", "create", "keep-me"))
    assert handle is not None
    refused = runner.invoke(app, ["keys", "delete", handle[0]], env=env, input="n\n")
    assert refused.exit_code == 1
    assert "Delete " + handle[0] + " for good?" in refused.output
    assert handle[0] in invoke(env, "keys", "list")
    no_answer = runner.invoke(app, ["keys", "delete", handle[0]], env=env, input="")
    assert no_answer.exit_code != 0
    assert handle[0] in invoke(env, "keys", "list")
    confirmed = runner.invoke(app, ["keys", "delete", handle[0]], env=env, input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert handle[0] not in invoke(env, "keys", "list")


def test_malformed_json_in_a_variable_names_it(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["keys", "list"], env={**env, "IMAGEGATE_BACKENDS": '{"demo": {"type": "demo",}}'})
    assert result.exit_code == 2
    assert "IMAGEGATE_BACKENDS is not valid JSON: Expecting property name" in result.output
    assert "line 1 column" in result.output


def test_an_unknown_key_in_the_toml_file_is_an_error(env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "imagegate.toml"
    config.write_text('retention_dayz = 3\n[models]\ndemo = "demo"\n')
    result = runner.invoke(app, ["keys", "list", "--config", str(config)], env=env)
    assert result.exit_code == 2
    assert f"{config}: unknown setting 'retention_dayz'; did you mean 'retention_days'?" in result.output
    config.write_text("retention_days = [oops\n")
    result = runner.invoke(app, ["keys", "list", "--config", str(config)], env=env)
    assert result.exit_code == 2
    assert "is not valid TOML" in result.output


def command_paths(group: Any, prefix: str = "imagegate") -> list[str]:
    """Every leaf command of the CLI as a user types it, e.g. 'imagegate keys create'."""
    paths = []
    for name, command in sorted(group.commands.items()):
        full = f"{prefix} {name}"
        paths += command_paths(command, full) if hasattr(command, "commands") else [full]
    return paths


def test_every_command_is_documented() -> None:
    root = Path(__file__).parent.parent
    text = (root / "README.md").read_text() + "".join(p.read_text() for p in sorted((root / "docs").glob("*.md")))
    text = re.sub(r"\s+", " ", text.replace("`", " "))
    missing = []
    for path in command_paths(typer.main.get_command(app)):
        *group, leaf = path.split()
        # Tables write sibling commands as 'imagegate keys create … · keys list'; accept the group's name before it.
        if path not in text and f"{' '.join(group[1:])} {leaf}".strip() not in text:
            missing.append(path)
    assert missing == [], f"document these commands in README.md or docs/: {missing}"


def test_listings_and_show_speak_json(env: dict[str, str]) -> None:
    created = invoke(env, "keys", "create", "scripted", "--daily-quota", "5")
    token = created.strip().splitlines()[-1]
    listed = json.loads(runner.invoke(app, ["keys", "list", "--json"], env=env).stdout)
    assert [key["name"] for key in listed] == ["scripted"]
    handle = listed[0]["handle"]
    shown = json.loads(runner.invoke(app, ["keys", "show", handle, "--json"], env=env).stdout)
    assert shown == listed[0]
    assert shown["daily_image_quota"] == 5
    assert shown["status"] == "enabled"
    events = json.loads(runner.invoke(app, ["audit", "--json"], env=env).stdout)
    assert events[0]["action"] == "key.create"
    assert events[0]["key"] == handle
    everything = json.dumps([listed, shown, events])
    assert token not in everything
    assert "hash" not in everything


def test_webhook_secret_is_shown_at_creation_and_on_demand_and_rotates(env: dict[str, str]) -> None:
    created = invoke(env, "keys", "create", "hooked")
    handle = re.search(r"key_[0-9a-f]{12}", created)
    assert handle is not None
    shown_at_creation = re.search(r"whsec_[A-Za-z0-9+/=]+", created)
    assert shown_at_creation is not None
    assert secret_of(env, handle[0]) == shown_at_creation[0]
    rotated = runner.invoke(app, ["keys", "webhook-secret", handle[0], "--rotate"], env=env)
    assert rotated.exit_code == 0, rotated.output
    new_secret = rotated.stdout.strip()
    assert new_secret.startswith("whsec_")
    assert new_secret != shown_at_creation[0]
    assert secret_of(env, handle[0]) == new_secret
    events = json.loads(runner.invoke(app, ["audit", "--json"], env=env).stdout)
    assert events[0]["action"] == "key.webhook_secret.rotate"
    assert new_secret not in json.dumps(events)


def secret_of(env: dict[str, str], handle: str) -> str:
    """What `keys webhook-secret HANDLE` prints on stdout."""
    result = runner.invoke(app, ["keys", "webhook-secret", handle], env=env)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()
