"""Codex reading images through POST /v1/vision, with the fake `codex` executable."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.backends import tiny_png
from tests.helpers import ASYNC, GENERATE, Harness, HarnessFactory, b64, codex_settings


async def ask(harness: Harness, prompt: str, images: int = 2, auth: dict[str, str] | None = None) -> Any:
    """A vision request on the codex model."""
    body = {"prompt": prompt, "images_base64": [b64(tiny_png())] * images, "model": "gpt-image-codex"}
    return await harness.client.post("/v1/vision", json=body, headers=auth or await harness.auth())


def argv_of(harness: Harness, request_id: str) -> list[str]:
    """The argv the fake codex recorded for a vision request."""
    workdir = Path(harness.app.state.services.settings.data_dir) / "codex" / "codex" / request_id
    args: list[str] = json.loads((workdir / "argv.json").read_text())
    return args


@pytest.mark.parametrize("where", ["answer-file", "answer-in-rollout", "answer-in-stdout"])
async def test_the_final_message_is_the_answer(harness_with: HarnessFactory, tmp_path: Path, where: str) -> None:
    async with harness_with(**codex_settings(tmp_path)) as gate:
        response = await ask(gate, f"Does it show a cat? {where}")
        assert response.status_code == 200, response.text
        assert response.json()["text"] == "VERDICT: PASS (2 image(s) seen)"
        args = argv_of(gate, response.json()["id"])
        assert args[args.index("--sandbox") + 1] == "read-only"
        assert args.count("--image") == 2
        assert "--output-last-message" in args
        assert args[args.index("--") + 1].startswith("Does it show a cat?")


async def test_no_final_message_is_a_502_never_an_empty_200(harness_with: HarnessFactory, tmp_path: Path) -> None:
    async with harness_with(**codex_settings(tmp_path)) as gate:
        response = await ask(gate, "Check it. no-answer")
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "backend_error"
        assert "session id" not in response.text


async def test_vision_takes_the_account_lock_of_generation(harness_with: HarnessFactory, tmp_path: Path) -> None:
    async with harness_with(**codex_settings(tmp_path)) as gate:
        auth = await gate.auth()
        images = [
            gate.client.post(
                GENERATE, json={"prompt": f"hold {i}", "model": "gpt-image-codex"}, headers={**auth, **ASYNC}
            )
            for i in range(2)
        ]
        reads = [ask(gate, f"hold and look {i}", images=1, auth=auth) for i in range(2)]
        answers = await asyncio.gather(*images, *reads)
        assert [a.status_code for a in answers[2:]] == [200, 200]
        for job in answers[:2]:
            polled = await gate.client.get(job.json()["status_url"], headers=auth)
            while polled.json()["status"] in ("queued", "running"):
                polled = await gate.client.get(job.json()["status_url"], headers=auth)
            assert polled.json()["status"] == "succeeded"
        assert not (tmp_path / "home0" / "CONFLICT").exists()  # never two execs on one account


async def test_an_account_at_its_limit_passes_the_question_on(harness_with: HarnessFactory, tmp_path: Path) -> None:
    async with harness_with(**codex_settings(tmp_path, accounts=2)) as gate:
        (tmp_path / "home0").mkdir(parents=True, exist_ok=True)
        (tmp_path / "home0" / "exhausted").write_text("")
        response = await ask(gate, "look")
        assert response.status_code == 200, response.text
        (tmp_path / "home1" / "exhausted").write_text("")
        spent = await ask(gate, "look again")
        assert spent.status_code == 429
        assert spent.json()["error"]["code"] == "rate_limit_exceeded"
