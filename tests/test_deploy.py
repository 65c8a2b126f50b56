"""The ready-made deployment files in deploy/: what can be checked without Docker, systemd or nginx."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from imagegate.app import create_app
from imagegate.cli import app as cli_app
from imagegate.settings import ENV_PREFIX, Settings
from tests.fakes.postgres import free_port
from tests.fakes.server import base_env

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def setting_names() -> set[str]:
    """Every IMAGEGATE_* variable name the settings read (and their *_FILE forms)."""
    names = {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    return names | {name + "_FILE" for name in names}


def check_invocation(argv: list[str]) -> None:
    """argv (without the program) parses as a real imagegate command: the command and its options exist.

    With --help appended, click parses everything first (an unknown command or option exits 2) and then
    prints the help instead of running it.
    """
    result = CliRunner().invoke(cli_app, [*argv, "--help"])
    assert result.exit_code == 0, result.output


def app_paths(routes: list[Any]) -> list[str]:
    """The path of every route of the app, including those of included routers."""
    paths = []
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            paths += app_paths(included.routes)
        elif hasattr(route, "path"):
            paths.append(route.path)
    return paths


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def dockerfile_env() -> dict[str, str]:
    """The ENV values the image sets."""
    values: dict[str, str] = {}
    for instruction, arguments in dockerfile_instructions():
        if instruction == "ENV":
            for part in shlex.split(arguments):
                name, _, value = part.partition("=")
                values[name] = value
    return values


def exec_form(instruction: str) -> list[str]:
    """The JSON (exec) form of the Dockerfile's CMD, ENTRYPOINT or HEALTHCHECK CMD."""
    arguments = dict(dockerfile_instructions())[instruction]
    if instruction == "HEALTHCHECK":
        arguments = arguments.split(" CMD ", 1)[1]
    value: list[str] = json.loads(arguments)
    return value


def test_compose_file_parses_and_names_only_real_settings() -> None:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"imagegate", "postgres"}
    service = services["imagegate"]
    assert (DEPLOY.parent / service["build"]["context"].replace("..", ".") / service["build"]["dockerfile"]).is_file()
    variables = [name for name in service["environment"] if name.startswith(ENV_PREFIX)]
    assert variables
    assert set(variables) <= setting_names(), set(variables) - setting_names()
    assert set(service["secrets"]) | set(services["postgres"]["secrets"]) <= set(compose["secrets"])
    assert "postgres" in service["depends_on"]
    for mount in service["volumes"] + services["postgres"]["volumes"]:
        assert mount.split(":", 1)[0] in compose["volumes"]
    data_dir = dockerfile_env()["IMAGEGATE_DATA_DIR"]
    assert any(mount.endswith(":" + data_dir) for mount in service["volumes"])


def test_systemd_unit_runs_a_real_command() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "imagegate.service")
    program, *argv = shlex.split(unit["Service"]["ExecStart"])
    assert Path(program).name == "imagegate"
    check_invocation(argv)
    assert unit["Service"]["KillSignal"] == "SIGTERM"
    for assignment in unit["Service"]["Environment"].split():
        assert assignment.split("=", 1)[0] in setting_names()
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_nginx_example_proxies_only_paths_that_exist(tmp_path: Path) -> None:
    text = (DEPLOY / "nginx.conf").read_text()
    active = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    locations = re.findall(r"location\s+(=\s*)?(\S+)\s*\{", active)
    assert locations
    routes = app_paths(create_app(Settings(data_dir=tmp_path)).routes)
    assert "/v1/images/generate" in routes
    for exact, path in locations:
        if exact:
            assert path in routes, path
        else:
            assert any(route.startswith(path) for route in routes), path
    read_timeouts = [int(value) for value in re.findall(r"proxy_read_timeout (\d+)s;", active)]
    assert max(read_timeouts) > Settings.model_fields["openai_wait_timeout_seconds"].default


def test_dockerfile_command_is_real_and_runs_as_the_container_would(tmp_path: Path) -> None:
    assert exec_form("ENTRYPOINT")[0].endswith("tini")
    command = exec_form("CMD")
    assert command[0] == "imagegate"
    check_invocation(command[1:])
    names = {instruction for instruction, _ in dockerfile_instructions()}
    assert {"USER", "VOLUME", "HEALTHCHECK"} <= names
    assert dict(dockerfile_instructions())["USER"] not in ("root", "0")

    image_env = dockerfile_env()
    assert set(image_env) - {"PYTHONUNBUFFERED"} <= setting_names()
    # As in the container, with the volume and the port moved to this test's own, and loopback instead of
    # 0.0.0.0 (tests only ever listen on loopback). Secrets come in as files, as compose passes them.
    port = free_port()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "admin_password").write_text("a long enough admin password\n")
    (secrets / "database_url").write_text(f"sqlite+aiosqlite:///{tmp_path / 'volume' / 'imagegate.db'}\n")
    env = base_env(
        **{
            **image_env,
            "IMAGEGATE_DATA_DIR": str(tmp_path / "volume"),
            "IMAGEGATE_HOST": "127.0.0.1",
            "IMAGEGATE_PORT": str(port),
        },
        IMAGEGATE_ADMIN_PASSWORD_FILE=str(secrets / "admin_password"),
        IMAGEGATE_DATABASE_URL_FILE=str(secrets / "database_url"),
    )
    program = Path(sys.executable).parent / command[0]
    log = tmp_path / "container.log"
    with open(log, "w") as sink:
        process = subprocess.Popen([str(program), *command[1:]], env=env, cwd=tmp_path, stdout=sink, stderr=sink)
    try:
        healthcheck = exec_form("HEALTHCHECK")
        assert healthcheck[0] == "python"
        probe = [sys.executable, *healthcheck[1:]]
        probe[-1] = probe[-1].replace(":8000/", f":{port}/")
        assert _passes_within(probe, process, seconds=60), log.read_text()
        # docker stop sends SIGTERM (tini passes it on): a graceful stop, ending as uvicorn does by re-raising it.
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) in (0, -signal.SIGTERM), log.read_text()
        assert "Application shutdown complete" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log.read_text()
    assert "generated an admin password" not in output  # the password came from its _FILE
    assert (tmp_path / "volume" / "imagegate.db").is_file()


def _passes_within(probe: list[str], process: subprocess.Popen[bytes], seconds: float) -> bool:
    """Run the health probe until it exits 0, the server dies, or the deadline passes."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode == 0:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("name", ["Dockerfile", "compose.yaml", "imagegate.service", "nginx.conf"])
def test_deployment_docs_name_every_file(name: str) -> None:
    assert f"deploy/{name}" in (DEPLOY.parent / "docs" / "deployment.md").read_text()
