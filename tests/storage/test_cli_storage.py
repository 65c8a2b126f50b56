"""`imagegate storage check` and `imagegate storage migrate --to URL`, on a local folder and an S3 bucket."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from imagegate.cli import app
from imagegate.storage import storage_at
from imagegate.storage.location import parse_storage_url
from tests.fakes.backends import tiny_png
from tests.fakes.postgres import free_port
from tests.fakes.s3 import S3Server
from tests.helpers import GENERATE, HarnessFactory, b64

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("s3_credentials")


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """The CLI pointed at the test database and data folder."""
    return {"IMAGEGATE_DATABASE_URL": database_url, "IMAGEGATE_DATA_DIR": str(tmp_path / "data")}


async def _cli(env: dict[str, str], *args: str) -> Any:
    """The CLI in a thread (it runs its own event loop), beside the test's app."""
    return await asyncio.to_thread(runner.invoke, app, list(args), env=env)


async def test_check_says_which_store_and_leaves_nothing_behind(
    env: dict[str, str], s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    local = await _cli(env, "storage", "check")
    assert local.exit_code == 0, local.output
    assert f"Storage: local folder {(tmp_path / 'data' / 'files').resolve()}" in local.output
    assert "OK: a probe object was written, read back and deleted." in local.output

    remote = await _cli({**env, "IMAGEGATE_STORAGE_URL": s3.url(bucket, "p")}, "storage", "check")
    assert remote.exit_code == 0, remote.output
    assert f"Storage: S3 bucket s3://{bucket}/p?endpoint={s3.endpoint}" in remote.output
    assert "OK" in remote.output
    assert s3.keys(bucket) == []


async def test_check_fails_on_a_store_that_cannot_be_written(env: dict[str, str]) -> None:
    nowhere = f"s3://nowhere?endpoint=http://127.0.0.1:{free_port()}"
    result = await _cli({**env, "IMAGEGATE_STORAGE_URL": nowhere}, "storage", "check")
    assert result.exit_code == 1
    assert "Error: The image storage cannot be written right now" in result.output


async def test_a_malformed_storage_url_is_a_configuration_error_naming_it(env: dict[str, str]) -> None:
    result = await _cli({**env, "IMAGEGATE_STORAGE_URL": "s3://b"}, "storage", "check")
    assert result.exit_code == 2
    assert "IMAGEGATE_STORAGE_URL names no valid bucket" in result.output
    wrong_target = await _cli(env, "storage", "migrate", "--to", "s3://bucket?colour=blue")
    assert wrong_target.exit_code == 2
    assert "unknown option 'colour'" in wrong_target.output


async def test_unreadable_credential_files_are_named(
    env: dict[str, str], s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("imagegate-test-secret\n")
    files = {"AWS_SECRET_ACCESS_KEY": "", "AWS_SECRET_ACCESS_KEY_FILE": str(secret)}
    read = await _cli({**env, **files, "IMAGEGATE_STORAGE_URL": s3.url(bucket)}, "storage", "check")
    assert read.exit_code == 0, read.output
    missing = {**files, "AWS_SECRET_ACCESS_KEY_FILE": str(tmp_path / "absent")}
    refused = await _cli({**env, **missing, "IMAGEGATE_STORAGE_URL": s3.url(bucket)}, "storage", "check")
    assert refused.exit_code == 2
    assert "AWS_SECRET_ACCESS_KEY_FILE: cannot read" in refused.output


async def test_migrate_copies_a_local_install_to_s3_resumes_and_then_serves_from_s3(
    harness_with: HarnessFactory, env: dict[str, str], s3: S3Server, bucket: str
) -> None:
    target = s3.url(bucket, "moved")
    async with harness_with() as local:
        headers = await local.auth()
        body = {"prompt": "x", "reference_image_base64": b64(tiny_png())}
        jobs = [(await local.client.post(GENERATE, json=body, headers=headers)).json() for _ in range(3)]
        token = headers["Authorization"]
        await local.app.state.services.storage.check()  # its probes are not data: none is copied

    first = await _cli(env, "storage", "migrate", "--to", target)
    assert first.exit_code == 0, first.output
    assert "Copied 6 file(s)" in first.output
    assert "0 already there" in first.output
    assert f"Now set IMAGEGATE_STORAGE_URL={target}" in first.output
    keys = sorted(s3.keys(bucket))
    assert len(keys) == 6
    assert all(key.startswith(("moved/images/", "moved/inputs/")) for key in keys)

    location = parse_storage_url(target)
    assert location is not None
    await storage_at(location).delete(keys[0].removeprefix("moved/"))  # as if the first run had stopped there
    again = await _cli(env, "storage", "migrate", "--to", target)
    assert again.exit_code == 0, again.output
    assert "Copied 1 file(s)" in again.output
    assert "5 already there" in again.output
    assert sorted(s3.keys(bucket)) == keys

    async with harness_with(storage_url=target) as moved:
        for job in jobs:
            image = await moved.client.get(job["images"][0]["url"])
            assert image.status_code == 200
            assert image.content.startswith(b"\x89PNG")
        listed = await moved.client.get(f"/v1/images/jobs/{jobs[0]['id']}", headers={"Authorization": token})
        assert listed.status_code == 200


async def test_migrate_refuses_the_configured_store_itself(env: dict[str, str], tmp_path: Path) -> None:
    itself = f"file://{(tmp_path / 'data' / 'files').resolve()}"
    result = await _cli(env, "storage", "migrate", "--to", itself)
    assert result.exit_code == 2
    assert "names the configured store itself" in result.output
