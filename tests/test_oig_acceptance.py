"""openai-image-gen's own documented client calls against a real `imagegate serve` with the second listener.

The curl bodies, `jq -r '.images[].id'` and `grep -o '"id":"[^"]*"'` of its README and skill file run as real
subprocesses; its Python `requests` example runs with httpx2. Clients send no key: the anonymous key answers.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from PIL import Image

from tests.fakes.postgres import free_port
from tests.fakes.server import ServerProcess, base_env, imagegate, serve
from tests.helpers import LEGACY_VALIDATION_CASES, new_pg_database

pytestmark = [
    pytest.mark.acceptance,
    pytest.mark.skipif(not all(shutil.which(tool) for tool in ("curl", "jq", "grep", "sh")), reason="needs curl, jq"),
]
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
README_BODY = (
    '{"prompt": "A serene mountain landscape at sunset", "model": "dall-e-3", "size": "1024x1024", '
    '"quality": "hd", "style": "vivid"}'
)
QUOTA = 4  # images the anonymous key may make per day: the README, skill-file and Python examples use them up


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The environment of an operator who routes the original's model names to the demo backend."""
    values = {
        "IMAGEGATE_MODELS": json.dumps({"dall-e-2": "demo", "dall-e-3": "demo"}),
        "IMAGEGATE_DEFAULT_MODEL": "dall-e-3",
        "IMAGEGATE_ADMIN_PASSWORD": "acceptance-admin-password",
    }
    if request.param == "postgresql":
        values["IMAGEGATE_DATABASE_URL"] = new_pg_database(request.getfixturevalue("pg_base_url"))
    return base_env(**values)


def sh(script: str, cwd: Path, **variables: str) -> str:
    """Run a shell pipeline as a user would type it; its stdout."""
    done = subprocess.run(
        ["sh", "-c", script], cwd=cwd, env={**base_env(), **variables}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def create_key(env: dict[str, str], cwd: Path, name: str, *options: str) -> tuple[str, str]:
    """`imagegate keys create`: the new key's handle and token."""
    created = imagegate("keys", "create", name, *options, env=env, cwd=cwd)
    assert created.returncode == 0, created.stderr
    handle = re.search(r"handle:\s+(key_\w+)", created.stdout)
    assert handle is not None, created.stdout
    return handle[1], created.stdout.strip().splitlines()[-1]


@pytest.fixture
def oig(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    """`imagegate serve` with IMAGEGATE_OIG_LISTEN and an anonymous key with a daily quota: (server, oig URL)."""
    assert imagegate("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    handle, _token = create_key(env, tmp_path, "agents", "--daily-quota", str(QUOTA))
    port = free_port()
    served = {**env, "IMAGEGATE_OIG_LISTEN": f"127.0.0.1:{port}", "IMAGEGATE_OIG_ANONYMOUS_KEY": handle}
    with serve(served, tmp_path) as server:
        yield server, f"http://127.0.0.1:{port}"


def test_the_originals_documented_clients_work_unchanged(oig: tuple[ServerProcess, str], tmp_path: Path) -> None:
    server, url = oig
    health = json.loads(sh('curl -s "$URL/health"', tmp_path, URL=url))
    assert (health["status"], health["api_key_configured"]) == ("healthy", True)
    assert "openai-image-gen API listening on" in server.output()

    # README: generate with curl, read the ids with jq, download one.
    ids = sh(
        'curl -s -X POST "$URL/generate" -H "Content-Type: application/json" -d "$BODY" | jq -r \'.images[].id\'',
        tmp_path,
        URL=url,
        BODY=README_BODY,
    ).split()
    assert len(ids) == 1
    assert UUID.match(ids[0])
    sh('curl -s -f -o mountain.png "$URL/images/$ID"', tmp_path, URL=url, ID=ids[0])
    with Image.open(tmp_path / "mountain.png") as image:
        assert (image.format, image.size) == ("PNG", (1024, 1024))

    # Skill file: the first id with grep, then delete it.
    first = sh(
        'curl -s -X POST "$URL/generate" -H "Content-Type: application/json" '
        '-d \'{"prompt": "a red fox", "model": "dall-e-2", "size": "256x256", "count": 2}\' '
        '| grep -o \'"id":"[^"]*"\' | head -1 | cut -d\'"\' -f4',
        tmp_path,
        URL=url,
    ).strip()
    assert UUID.match(first), first
    deleted = json.loads(sh('curl -s -X DELETE "$URL/images/$ID"', tmp_path, URL=url, ID=first))
    assert deleted == {"status": "success", "message": f"Image {first} deleted"}
    for wrong in (first, "0", first[:8], "png"):
        status = sh('curl -s -o /dev/null -w "%{http_code}" "$URL/images/$ID"', tmp_path, URL=url, ID=wrong)
        assert status == "404", wrong
    missing = httpx2.get(f"{url}/images/{ids[0][:-1]}", timeout=10)
    assert missing.json() == {"error": f"Image not found: {ids[0][:-1]}", "status": "failed", "code": "IMAGE_NOT_FOUND"}

    # README's Python example, with httpx2 in place of requests.
    response = httpx2.post(f"{url}/generate", json={"prompt": "A cozy cabin", "model": "dall-e-3"}, timeout=120)
    response.raise_for_status()
    for item in response.json()["images"]:
        picture = httpx2.get(f"{url}{item['url']}", timeout=30)
        assert picture.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(picture.content)).size == (1024, 1024)
        assert item["prompt"] == "A cozy cabin"

    # The anonymous key's quota is used up: the original's 429.
    over = httpx2.post(f"{url}/generate", json={"prompt": "one more"}, timeout=60)
    assert over.status_code == 429
    assert over.json()["code"] == "RATE_LIMIT_EXCEEDED"
    assert int(over.headers["retry-after"]) > 0


def test_every_validation_message_on_the_second_listener(oig: tuple[ServerProcess, str]) -> None:
    _server, url = oig
    with httpx2.Client(base_url=url, timeout=30) as client:
        for body, message in LEGACY_VALIDATION_CASES:
            response = client.post("/generate", content=json.dumps(body), headers={"Content-Type": "application/json"})
            assert response.status_code == 400, body
            assert response.json() == {"error": message, "status": "failed", "code": "VALIDATION_ERROR"}, body
        not_json = client.post("/generate", content=b"{", headers={"Content-Type": "application/json"})
        assert not_json.json() == {"error": "Invalid JSON in request body", "status": "failed", "code": "INVALID_JSON"}
        unknown: dict[str, Any] = client.get("/v1/images/jobs").json()
        assert (unknown["status"], unknown["code"]) == ("failed", "HTTP_ERROR")


def test_keyless_is_refused_without_the_setting_and_a_bad_handle_stops_the_start(
    env: dict[str, str], tmp_path: Path
) -> None:
    assert imagegate("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    _handle, token = create_key(env, tmp_path, "script")
    port = free_port()
    with serve({**env, "IMAGEGATE_OIG_LISTEN": f"127.0.0.1:{port}"}, tmp_path):
        url = f"http://127.0.0.1:{port}"
        refused = json.loads(
            sh(
                'curl -s -X POST "$URL/generate" -H "Content-Type: application/json" -d \'{"prompt": "x"}\'',
                tmp_path,
                URL=url,
            )
        )
        assert (refused["status"], refused["code"]) == ("failed", "MISSING_API_KEY")
        keyed = httpx2.post(
            f"{url}/generate", json={"prompt": "x"}, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        assert keyed.status_code == 200, keyed.text
    bad = {**env, "IMAGEGATE_OIG_LISTEN": f"127.0.0.1:{free_port()}", "IMAGEGATE_OIG_ANONYMOUS_KEY": "key_typo"}
    stopped = imagegate("serve", "--port", str(free_port()), env=bad, cwd=tmp_path)
    assert stopped.returncode != 0
    assert "IMAGEGATE_OIG_ANONYMOUS_KEY=key_typo: no key has that handle" in stopped.stdout + stopped.stderr
