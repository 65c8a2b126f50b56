"""The imagegate command: keys, db upgrade, cleanup and expiry parsing."""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
import typer
from typer.testing import CliRunner

from imagegate.cli import app, parse_expiry
from imagegate.cli import jobs as jobs_cli
from imagegate.cli.progress import ProgressLine
from imagegate.client import ClientError, generate_to_files, output_paths
from tests.fakes.server import imagegate, loopback_client, serve, serve_env
from tests.helpers import ASYNC, GENERATE, Harness, HarnessFactory, make_settings, stored_job

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
    assert "monthly budget:  unlimited" in created
    updated = invoke(
        env, "keys", "update", handle[0], "--daily-quota", "none", "--monthly-quota", "100", "--models", "all"
    )
    assert "daily quota:     unlimited" in updated
    assert "monthly quota:   100 images" in updated
    assert "models:          all" in updated
    budgeted = invoke(env, "keys", "update", handle[0], "--monthly-budget-usd", "12.50")
    assert "monthly budget:  $12.50 (estimated spend)" in budgeted
    assert "monthly budget:  unlimited" in invoke(env, "keys", "update", handle[0], "--monthly-budget-usd", "none")
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
        (["keys", "create", "x", "--monthly-budget-usd", "0"], "dollars above 0"),
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
    context = typer.Context(group)
    for name in sorted(group.list_commands(context)):  # list_commands imports the lazily loaded groups
        command, full = group.get_command(context, name), f"{prefix} {name}"
        paths += command_paths(command, full) if hasattr(command, "list_commands") else [full]
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


async def _cli(env: dict[str, str], *args: str, stdin: str | None = None) -> Any:
    """The CLI in a thread (it runs its own event loop), beside the test's app."""
    return await asyncio.to_thread(runner.invoke, app, list(args), env=env, input=stdin)


async def _cli_json(env: dict[str, str], *args: str) -> Any:
    """The CLI's JSON output; fails the test on a non-zero exit."""
    result = await _cli(env, *args, "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


async def test_the_operator_lists_shows_cancels_and_deletes_any_key_s_jobs(
    harness_with: HarnessFactory, database_url: str, tmp_path: Path
) -> None:
    env = {"IMAGEGATE_DATABASE_URL": database_url, "IMAGEGATE_DATA_DIR": str(tmp_path / "data")}
    async with harness_with() as h:
        alice, alice_token = await h.new_key("alice")
        bob, bob_token = await h.new_key("bob")
        done = await h.client.post(
            GENERATE, json={"prompt": "a fox"}, headers={"Authorization": f"Bearer {alice_token}"}
        )
        assert done.status_code == 200, done.text
        held = await h.client.post(
            GENERATE, json={"prompt": "gate:held"}, headers={"Authorization": f"Bearer {bob_token}", **ASYNC}
        )
        await h.fake.wait_started(1)
        done_id, held_id = done.json()["id"], held.json()["id"]

        listed = await _cli(env, "jobs", "list")
        assert listed.exit_code == 0, listed.output
        assert done_id in listed.stdout
        assert held_id in listed.stdout
        assert alice.handle in listed.stdout
        assert bob.handle in listed.stdout
        as_json = await _cli_json(env, "jobs", "list", "--key", bob.handle)
        assert [(job["id"], job["key"], job["status"]) for job in as_json] == [(held_id, bob.handle, "running")]
        succeeded = await _cli_json(env, "jobs", "list", "--status", "succeeded")
        assert [job["id"] for job in succeeded] == [done_id]
        assert len(await _cli_json(env, "jobs", "list", "--limit", "1")) == 1
        wrong = await _cli(env, "jobs", "list", "--status", "done")
        assert wrong.exit_code == 2
        assert "not a job status" in wrong.output

        proxied = {**env, "IMAGEGATE_PUBLIC_BASE_URL": "https://images.example.com/gate/", "IMAGEGATE_PORT": "9"}
        shown = await _cli(proxied, "jobs", "show", done_id)
        assert shown.exit_code == 0, shown.output
        assert "a fox" in shown.stdout
        name = done.json()["images"][0]["url"].rsplit("/", 1)[1]
        assert f"image:       https://images.example.com/gate/generated/{name}" in shown.stdout
        detail = await _cli_json(proxied, "jobs", "show", done_id)
        assert (detail["id"], detail["status"], detail["key"]) == (done_id, "succeeded", alice.handle)
        assert detail["images"][0]["url"] == f"https://images.example.com/gate/generated/{name}"
        missing = await _cli(env, "jobs", "show", "img_nothing")
        assert missing.exit_code == 1
        assert "No job 'img_nothing'." in missing.output

        running = await _cli(env, "jobs", "delete", held_id, "--yes")
        assert running.exit_code == 1
        assert "cancel it first" in running.output
        cancelled = await _cli(env, "jobs", "cancel", held_id)
        assert cancelled.exit_code == 0, cancelled.output
        audited = (await _cli_json(env, "audit", "--action", "admin.job_cancel"))[0]
        assert (audited["actor"], audited["key"]) == ("cli", bob.handle)
        auth = {"Authorization": f"Bearer {bob_token}"}
        deadline = asyncio.get_running_loop().time() + 60
        while (await h.client.get(f"/v1/images/jobs/{held_id}", headers=auth)).json()["status"] != "cancelled":
            assert asyncio.get_running_loop().time() < deadline, "the running job was never cancelled"
            await asyncio.sleep(0.05)

        kept = await _cli(env, "jobs", "delete", done_id, stdin="n\n")
        assert kept.exit_code == 1
        assert "Not deleted" in kept.output
        assert (
            await h.client.get(f"/v1/images/jobs/{done_id}", headers={"Authorization": f"Bearer {alice_token}"})
        ).status_code == 200
        deleted = await _cli(env, "jobs", "delete", done_id, stdin="y\n")
        assert deleted.exit_code == 0, deleted.output
        assert (await stored_job(h, done_id)).deleted_by == "cli"
        shown_deleted = await _cli(env, "jobs", "show", done_id)
        assert "by the operator (imagegate jobs delete)" in shown_deleted.stdout
        gone = await h.client.get(f"/v1/images/jobs/{done_id}", headers={"Authorization": f"Bearer {alice_token}"})
        assert gone.status_code == 404
        assert (await h.client.get(done.json()["images"][0]["url"])).status_code == 404  # its file went too


def test_job_links_without_a_public_url_point_where_this_machine_reaches_the_server(tmp_path: Path) -> None:
    def link_base(**overrides: Any) -> str:
        return jobs_cli.base_url(make_settings("sqlite+aiosqlite://", tmp_path, **overrides))

    every = "0.0.0.0"  # noqa: S104 (a setting read, nothing bound)
    assert link_base(host=every, port=8080, root_path="/images/") == "http://127.0.0.1:8080/images"
    assert link_base(host="::", port=9000) == "http://[::1]:9000"
    assert link_base(host="localhost", port=80) == "http://localhost:80"
    assert link_base(host=every, public_base_url="https://images.example.com/") == "https://images.example.com"


@pytest.mark.acceptance
def test_job_links_name_the_port_the_server_was_started_on(database_url: str, tmp_path: Path) -> None:
    env, headers = serve_env(database_url, tmp_path)  # the settings say port 8000; the server gets --port
    with serve(env, tmp_path) as server, loopback_client(timeout=60) as client:
        done = client.post(f"{server.url}/v1/images/generate", headers=headers, json={"prompt": "a lighthouse"})
        assert done.status_code == 200, done.text
        job_id = done.json()["id"]
        shown = imagegate("jobs", "show", job_id, env=env, cwd=tmp_path)
        assert f"image:       {server.url}/generated/" in shown.stdout, shown.stdout + shown.stderr
        listed = json.loads(imagegate("jobs", "show", job_id, "--json", env=env, cwd=tmp_path).stdout)
        assert listed["images"][0]["url"].startswith(f"{server.url}/generated/")
        assert client.get(listed["images"][0]["url"]).status_code == 200
        proxied = imagegate(
            "jobs", "show", job_id, env={**env, "IMAGEGATE_PUBLIC_BASE_URL": "https://img.example"}, cwd=tmp_path
        )
        assert "image:       https://img.example/generated/" in proxied.stdout  # the proxy's address comes first
        assert server.terminate() in (0, -15)  # uvicorn re-raises SIGTERM after a clean shutdown
    assert not (tmp_path / "data" / "listening.json").exists()  # a clean stop removes the record
    stopped = imagegate("jobs", "show", job_id, env=env, cwd=tmp_path)
    assert "image:       http://127.0.0.1:8000/generated/" in stopped.stdout  # the settings again


def test_generate_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "cat.png"
    out.write_bytes(b"mine")
    (tmp_path / "cat-2.png").write_bytes(b"mine too")
    args = ["generate", "a cat", "-o", str(out), "--key", "ig_x", "--url", "http://127.0.0.1:9", "--count", "2"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1
    assert f"{out}, {tmp_path / 'cat-2.png'} already exists; pass --force to overwrite." in refused.output
    assert out.read_bytes() == b"mine"
    forced = runner.invoke(app, [*args, "--force"])  # goes on to the (absent) server, and says so
    assert forced.exit_code == 1
    assert "Error: cannot reach http://127.0.0.1:9" in forced.output


async def test_the_client_reports_progress_and_the_job_s_error(harness: Harness, tmp_path: Path) -> None:
    seen: list[str] = []

    def progress(job: dict[str, Any], seconds: float) -> None:
        seen.append(job["status"])
        if len(seen) == 1:
            harness.fake.open("gate:slow")

    transport = httpx2.ASGITransport(app=harness.app)
    key = (await harness.auth())["Authorization"].removeprefix("Bearer ")
    common: dict[str, Any] = {"url": "http://testserver", "key": key, "timeout": 60, "transport": transport}
    saved = await generate_to_files(
        body={"prompt": "gate:slow"}, output=tmp_path / "a.png", progress=progress, **common
    )
    assert saved == [tmp_path / "a.png"]
    assert seen[0] in ("queued", "running")  # answered at once (respond-async), then polled
    assert seen[-1] == "succeeded"
    with pytest.raises(ClientError, match="refused"):
        await generate_to_files(body={"prompt": "fail: no"}, output=tmp_path / "b.png", progress=None, **common)
    with pytest.raises(ClientError, match=r"job img_\w+ failed: .*refused"):
        await generate_to_files(body={"prompt": "fail: no"}, output=tmp_path / "c.png", progress=progress, **common)


def test_progress_is_one_line_per_status_off_a_terminal_and_rewritten_on_one() -> None:
    log = io.StringIO()
    line = ProgressLine(log, terminal=False)
    for status, seconds in (("queued", 0.0), ("queued", 1.0), ("running", 2.0), ("succeeded", 9.4)):
        line({"id": "img_1", "status": status}, seconds)
    assert log.getvalue() == "img_1: queued, 0 s\nimg_1: running, 2 s\nimg_1: succeeded, 9 s\n"
    screen = io.StringIO()
    line = ProgressLine(screen, terminal=True)
    for status, seconds in (("running", 0.0), ("running", 12.0), ("failed", 13.0)):
        line({"id": "img_1", "status": status}, seconds)
    assert screen.getvalue() == "\rimg_1: running, 0 s\rimg_1: running, 12 s\rimg_1: failed, 13 s \n"


HEAVY = ("fastapi", "starlette", "sqlalchemy", "alembic", "PIL", "openai", "httpx2", "prometheus_client")
OURS_HEAVY = ("imagegate.app", "imagegate.backends", "imagegate.jobs", "imagegate.keys", "imagegate.settings")
SHOW_MODULES = """
import sys
sys.argv = ["imagegate", *sys.argv[1:]]
from imagegate.cli import main
try:
    main()
except SystemExit:
    pass
print("MODULES", *sorted(sys.modules))
"""


def modules_imported_by(*args: str) -> set[str]:
    """The modules a fresh `imagegate ARGS` process has imported when it ends."""
    done = subprocess.run([sys.executable, "-c", SHOW_MODULES, *args], capture_output=True, text=True, check=True)
    return set(done.stdout.split("MODULES", 1)[1].split())


def heavy_modules(imported: set[str]) -> list[str]:
    """The app's, the database's and the SDKs' modules among those imported."""
    return sorted(m for m in imported if m.split(".")[0] in HEAVY or m.startswith(OURS_HEAVY))


def test_version_imports_no_heavy_module() -> None:
    imported = modules_imported_by("--version")
    assert heavy_modules(imported) == []
    assert "pydantic" not in imported  # typer's help imports it; --version must not


def test_help_of_a_group_imports_no_heavy_module() -> None:
    assert heavy_modules(modules_imported_by("db", "--help")) == []


def test_a_command_imports_its_own_group_only() -> None:
    imported = modules_imported_by("keys", "--help")
    assert "imagegate.cli.keys" in imported
    assert not {"fastapi", "imagegate.cli.jobs", "imagegate.backends.registry", "imagegate.app"} & imported
