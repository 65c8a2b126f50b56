"""Moving from codex-image-service: its database imported, then its README's curl calls against a real server.

The test builds a database in the original's schema (two keys, one disabled; history rows with files), imports
it with the CLI, and then behaves exactly as the original's clients do: curl with --fail, jq-like reads of
.images[0].url and .error, the async submit polled as its README advises, and the vision endpoint.
"""

from __future__ import annotations

import base64
import io
import json
import sqlite3
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.fakes.backends import tiny_png
from tests.fakes.codex_image_service import ACTIVE_KEY, DISABLED_KEY, build_original, handle_of
from tests.fakes.server import ServerProcess, base_env, imagegate, serve

pytestmark = pytest.mark.acceptance


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    """curl as the original's README calls it."""
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=120, check=False)


def curl_json(*args: str) -> Any:
    """curl --fail, its body parsed (the README pipes it to jq)."""
    done = curl("--fail", "--max-time", "650", *args)
    assert done.returncode == 0, (done.returncode, done.stderr, done.stdout)
    return json.loads(done.stdout)


def post(server: ServerProcess, path: str, key: str, body: dict[str, Any], tmp_path: Path) -> list[str]:
    """The curl arguments of a README POST with a JSON body file."""
    body_file = tmp_path / f"body-{time.monotonic_ns()}.json"
    body_file.write_text(json.dumps(body))
    return [
        "-X",
        "POST",
        f"{server.url}{path}",
        "-H",
        f"Authorization: Bearer {key}",
        "-H",
        "Content-Type: application/json",
        "-d",
        f"@{body_file}",
    ]


def png_b64(colour: tuple[int, int, int], size: tuple[int, int]) -> str:
    """A PNG as the README builds it: base64 -w0 of a file."""
    return base64.b64encode(tiny_png(colour, size)).decode()


def test_import_then_the_original_clients_work_unchanged(database_url: str, tmp_path: Path) -> None:
    database, generated, files = build_original(tmp_path / "old")
    env = base_env(
        IMAGEGATE_DATABASE_URL=database_url,
        IMAGEGATE_DATA_DIR=str(tmp_path / "data"),
        IMAGEGATE_ADMIN_PASSWORD="x" * 16,
        IMAGEGATE_POLL_INTERVAL_SECONDS="0.1",
    )
    _import_and_check_the_cli(env, tmp_path, database, generated)
    with serve(env, tmp_path) as server:
        _old_urls_and_history(server, files)
        _readme_calls(server, tmp_path)
        _vision(server, env, tmp_path)


def _import_and_check_the_cli(env: dict[str, str], tmp_path: Path, database: Path, generated: Path) -> None:
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("this is not a database at all, just some text " * 20)
    refused = imagegate("import", "codex-image-service", str(not_sqlite), env=env, cwd=tmp_path)
    assert refused.returncode == 1
    assert "not an SQLite database" in refused.stderr
    other = tmp_path / "other.db"
    sqlite3.connect(other).executescript("CREATE TABLE things (id INTEGER);")
    refused = imagegate("import", "codex-image-service", str(other), env=env, cwd=tmp_path)
    assert refused.returncode == 1
    assert "not a codex-image-service database" in refused.stderr

    args = ("import", "codex-image-service", str(database), "--files", str(generated))
    dry = imagegate(*args, "--dry-run", env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "Would import 2 key(s) (0 already here), 4 job(s) (0 already here) with 3 image(s)." in dry.stdout
    first = imagegate(*args, env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Imported 2 key(s) (0 already here), 4 job(s) (0 already here) with 3 image(s)." in first.stdout
    assert f"key {handle_of(DISABLED_KEY)} (old laptop, disabled): imported" in first.stdout
    again = imagegate(*args, env=env, cwd=tmp_path)
    assert "Imported 0 key(s) (2 already here), 0 job(s) (4 already here) with 0 image(s)." in again.stdout
    listed = imagegate("keys", "list", env=env, cwd=tmp_path)
    assert handle_of(ACTIVE_KEY) in listed.stdout
    assert handle_of(DISABLED_KEY) in listed.stdout
    audited = imagegate("audit", "--action", "key.import", env=env, cwd=tmp_path)
    assert audited.stdout.count("key.import") == 2
    assert "requests_count=7" in audited.stdout


def _old_urls_and_history(server: ServerProcess, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        download = subprocess.run(
            ["curl", "-sS", "--fail", f"{server.url}/generated/{name}"], capture_output=True, timeout=60, check=False
        )
        assert download.returncode == 0, name
        assert download.stdout == data
    auth = ["-H", f"Authorization: Bearer {ACTIVE_KEY}"]
    old = curl_json(f"{server.url}/v1/images/jobs/img_00{'f' * 20}", *auth)
    assert old["status"] == "succeeded"
    assert old["images"][0]["url"].endswith("/generated/img_00ffffffffffffffffffff.png")
    assert old["expires_at"] > datetime.now(UTC).isoformat()
    failed = curl_json(f"{server.url}/v1/images/jobs/img_03{'f' * 20}", *auth)
    assert (failed["status"], failed["error"]) == ("failed", "Codex exited with status 1")
    other_keys_job = curl("--fail", f"{server.url}/v1/images/jobs/img_02{'f' * 20}", *auth)
    assert other_keys_job.returncode == 22  # only the key that submitted a job sees it


def _readme_calls(server: ServerProcess, tmp_path: Path) -> None:
    made = curl_json(
        *post(server, "/v1/images/generate", ACTIVE_KEY, {"prompt": "a red fox", "size": "512x512"}, tmp_path)
    )
    assert made["status"] == "succeeded"
    image = subprocess.run(["curl", "-sS", "--fail", made["images"][0]["url"]], capture_output=True, check=False)
    assert Image.open(io.BytesIO(image.stdout)).size == (512, 512)

    references = [png_b64((255, 0, 0), (64, 64)), png_b64((0, 0, 255), (64, 64))]
    edit = {"prompt": "combine them", "reference_images_base64": references, "quality": "medium"}
    edited = curl_json(*post(server, "/v1/images/generate", ACTIVE_KEY, edit, tmp_path))
    assert (edited["status"], edited["reference_image_count"]) == ("succeeded", 2)

    extra = {"prompt": "a cat", "size": "256x256", "negative_prompt": "dogs", "seed": 7}
    assert curl_json(*post(server, "/v1/images/generate", ACTIVE_KEY, extra, tmp_path))["status"] == "succeeded"

    submitted = curl("--fail", "-i", *post(server, "/v1/images/jobs", ACTIVE_KEY, {"prompt": "later"}, tmp_path))
    assert submitted.returncode == 0, submitted.stderr
    head, _, body = submitted.stdout.partition("\n\n")  # text mode turned CRLF into LF
    assert head.startswith("HTTP/1.1 202")
    assert "location:" in head.lower()
    job = json.loads(body)
    assert job["id"].startswith("img_")
    assert job["status"] == "queued"
    deadline = time.monotonic() + 60  # the README polls every 5 s; a demo job is done sooner
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        job = curl_json(f"{server.url}/v1/images/jobs/{job['id']}", "-H", f"Authorization: Bearer {ACTIVE_KEY}")
    assert job["status"] == "succeeded"
    assert job["error"] is None

    disabled = curl("--fail", *post(server, "/v1/images/generate", DISABLED_KEY, {"prompt": "x"}, tmp_path))
    assert disabled.returncode == 22
    assert "403" in disabled.stderr
    no_key = curl("--fail", "-X", "POST", f"{server.url}/v1/images/generate", "-d", '{"prompt": "x"}')
    assert no_key.returncode == 22
    shown = curl(*post(server, "/v1/images/generate", DISABLED_KEY, {"prompt": "x"}, tmp_path))
    assert "disabled" in json.loads(shown.stdout)["detail"]


def _vision(server: ServerProcess, env: dict[str, str], tmp_path: Path) -> None:
    body = {"prompt": "Which colour? Answer VERDICT: PASS or FAIL", "images_base64": [png_b64((0, 200, 0), (48, 24))]}
    answer = curl_json(*post(server, "/v1/vision", ACTIVE_KEY, body, tmp_path))
    assert answer["id"].startswith("vis_")
    assert "48x24" in answer["text"]
    assert "green" in answer["text"]
    for count in (0, 17):
        refused = curl(
            "--fail",
            *post(
                server,
                "/v1/vision",
                ACTIVE_KEY,
                {**body, "images_base64": [png_b64((0, 0, 0), (8, 8))] * count},
                tmp_path,
            ),
        )
        assert refused.returncode == 22
        assert "400" in refused.stderr
    no_key = curl(
        "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", f"{server.url}/v1/vision", "-d", json.dumps(body)
    )
    assert no_key.stdout == "401"

    picture = tmp_path / "yellow.png"
    picture.write_bytes(tiny_png((250, 240, 0), (40, 30)))
    described = imagegate(
        "describe",
        str(picture),
        "--prompt",
        "What colour?",
        "--url",
        server.url,
        "--key",
        ACTIVE_KEY,
        env=env,
        cwd=tmp_path,
    )
    assert described.returncode == 0, described.stderr
    assert "40x30" in described.stdout
    assert "yellow" in described.stdout
