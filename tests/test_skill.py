"""docs/SKILL.md: every shell example in it runs against a real server and does what the text says."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fakes.receiver import receiver
from tests.fakes.server import base_env, imagegate, serve

pytestmark = [
    pytest.mark.acceptance,
    pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="needs curl and jq"),
]
SKILL = Path(__file__).parent.parent / "docs" / "SKILL.md"


def shell_examples() -> list[str]:
    """The ```sh blocks of SKILL.md, in order."""
    return re.findall(r"```sh\n(.*?)```", SKILL.read_text(), flags=re.DOTALL)


def test_the_skill_has_examples_for_each_topic() -> None:
    examples = shell_examples()
    assert len(examples) >= 6
    joined = "\n".join(examples)
    for needle in ("/v1/images/generate", "respond-async", "webhook_url", "/v1/images/generations", "/v1/usage"):
        assert needle in joined


def test_every_shell_example_runs_against_a_real_server(tmp_path: Path) -> None:
    env = base_env(
        IMAGEGATE_DATA_DIR=str(tmp_path / "data"),
        IMAGEGATE_ADMIN_PASSWORD="x" * 16,
        IMAGEGATE_POLL_INTERVAL_SECONDS="0.1",
        IMAGEGATE_WEBHOOK_ALLOW_PRIVATE="true",
    )
    assert imagegate("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    created = imagegate("keys", "create", "agent", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    outputs = []
    with receiver() as hook, serve(env, tmp_path) as server:
        shell_env = {**base_env(), "IMAGEGATE_URL": server.url, "KEY": key, "WEBHOOK_URL": hook.url}
        for example in shell_examples():
            done = subprocess.run(
                ["bash", "-c", "set -euo pipefail\n" + example],
                env=shell_env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, f"{example}\n{done.stdout}\n{done.stderr}"
            assert done.stdout.strip(), example
            outputs.append(done.stdout)
        (delivery,) = hook.wait_for(1)
    assert '"status": "succeeded"' in outputs[0]
    assert (tmp_path / "lighthouse.png").read_bytes().startswith(b"\x89PNG")
    assert "http" in outputs[2]
    assert delivery.headers["webhook-signature"].startswith("v1,")
    assert outputs[-1].rstrip().endswith("HTTP 400")
