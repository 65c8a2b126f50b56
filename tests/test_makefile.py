"""The Makefile's serve target: it passes --host/--port only when HOST/PORT are given."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def serve_command(*variables: str, **env: str) -> list[str]:
    """The command `make serve` would run (dry run; the venv targets are taken as up to date)."""
    environment = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT", "MAKEFLAGS")}
    environment.update(env)
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", ".venv/.runtime", "-o", ".venv/bin/python", "serve", *variables],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [line for line in result.stdout.splitlines() if "imagegate serve" in line]
    assert len(lines) == 1, result.stdout
    return shlex.split(lines[0])


def test_serve_leaves_host_and_port_to_the_settings() -> None:
    command = serve_command(IMAGEGATE_HOST="127.0.0.2", IMAGEGATE_PORT="9100")
    assert command[-1] == "serve"
    assert "--host" not in command
    assert "--port" not in command


def test_serve_passes_host_and_port_when_given() -> None:
    command = serve_command("HOST=127.0.0.2", "PORT=9100")
    assert command[-4:] == ["--host", "127.0.0.2", "--port", "9100"]


def test_serve_passes_only_what_is_given() -> None:
    assert serve_command("PORT=9100")[-2:] == ["--port", "9100"]
    assert "--host" not in serve_command("PORT=9100")
