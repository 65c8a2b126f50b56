"""The Codex backend through the public API, with a fake `codex` executable written by the tests."""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from imagegate.backends import usage
from imagegate.db import utcnow
from tests.fakes.backends import tiny_png
from tests.fakes.codex import exec_intervals, overlaps, process_alive
from tests.helpers import (
    ASYNC,
    GENERATE,
    Harness,
    HarnessFactory,
    account_successes,
    b64,
    codex_settings,
    codex_workdirs,
    generate_on_codex,
    make_settings,
    start,
    stored_job,
)


@pytest.fixture
async def gate(harness_with: HarnessFactory, tmp_path: Path) -> AsyncIterator[Harness]:
    """The app with a one-account Codex backend."""
    async with harness_with(**codex_settings(tmp_path)) as running:
        yield running


@pytest.mark.parametrize(
    "layout",
    ["layout-159", "layout-141-end", "layout-141-call", "layout-generated", "layout-workdir", "layout-159 ansi"],
)
async def test_every_output_layout_is_found_and_resized(gate: Harness, layout: str) -> None:
    response = await generate_on_codex(gate, f"a harbour {layout}", size="256x128", output_format="webp")
    assert response.status_code == 200, response.text
    image = response.json()["images"][0]
    assert (image["width"], image["height"], image["format"]) == (256, 128, "webp")
    job = await stored_job(gate, response.json()["id"])
    assert job.result is not None
    assert job.result["codex"] == {
        "requested_size": "256x128",
        "delivered_sizes": ["1024x1536"],
        "images_requested": 1,
    }
    assert "session id" in job.logs
    assert "session id" not in response.text


async def test_the_command_line_keeps_the_prompt_after_the_separator(gate: Harness) -> None:
    prompt = "--dangerously-bypass-approvals-and-sandbox; rm -rf / $(reboot)"
    response = await generate_on_codex(gate, prompt)
    assert response.status_code == 200
    (argv_file,) = codex_workdirs(gate).rglob("argv.json")
    argv = json.loads(argv_file.read_text())
    separator = argv.index("--")
    assert argv[:separator].count("--dangerously-bypass-approvals-and-sandbox") == 0
    assert argv[:separator][:3] == ["exec", "--skip-git-repo-check", "--sandbox"]
    assert len(argv) == separator + 2
    assert prompt in argv[-1]
    assert "$imagegen" in argv[-1]


async def test_edit_mode_passes_the_references_and_makes_one_image(gate: Harness) -> None:
    refs = [b64(tiny_png((255, 0, 0))), b64(tiny_png((0, 255, 0)))]
    response = await generate_on_codex(gate, "recolour", count=3, reference_images_base64=refs)
    assert response.status_code == 200, response.text
    assert response.json()["image_count"] == 1
    (argv_file,) = codex_workdirs(gate).rglob("argv.json")
    argv = json.loads(argv_file.read_text())
    images = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--image"]
    assert [Path(p).read_bytes() for p in images] == [tiny_png((255, 0, 0)), tiny_png((0, 255, 0))]
    assert "input-1.png, input-2.png" in argv[-1]
    job = await stored_job(gate, response.json()["id"])
    assert job.result is not None
    assert job.result["codex"]["images_requested"] == 3


@pytest.mark.parametrize(
    ("prompt", "status", "code", "words"),
    [
        ("refuse this", 400, "content_policy_violation", "declined"),
        ("exit-3 now", 502, "backend_error", "status 3"),
        ("no-output here", 502, "backend_error", "without producing"),
    ],
)
async def test_no_image_fails_with_a_clear_reason(
    gate: Harness, prompt: str, status: int, code: str, words: str
) -> None:
    response = await generate_on_codex(gate, prompt)
    assert response.status_code == status
    assert response.json()["error_code"] == code
    assert words in response.json()["error"]
    assert "session id" not in response.text


async def test_a_spent_account_hands_over_to_the_next(harness_with: HarnessFactory, tmp_path: Path) -> None:
    async with harness_with(**codex_settings(tmp_path, accounts=2)) as gate:
        (tmp_path / "home0").mkdir()
        (tmp_path / "home0" / "exhausted").touch()
        first = await generate_on_codex(gate, "first")
        assert first.status_code == 200, first.text
        second = await generate_on_codex(gate, "second")
        assert second.status_code == 200
        async with gate.app.state.services.sessions() as session:
            stats = {s.subject: s.windows["5h"] for s in await usage.stats(session, backend="codex", now=utcnow())}
        assert stats["acct0"].requests == 1  # rested after its limit: not asked again
        assert stats["acct0"].successes == 0
        assert stats["acct1"].successes == 2
        assert stats["acct1"].images == 2


async def test_all_accounts_spent_is_a_429_with_the_reset_time(harness_with: HarnessFactory, tmp_path: Path) -> None:
    async with harness_with(**codex_settings(tmp_path, accounts=2)) as gate:
        response = await generate_on_codex(gate, "quota please")
        assert response.status_code == 429
        assert response.json()["error_code"] == "rate_limit_exceeded"
        assert 7400 <= int(response.headers["retry-after"]) <= 7500  # "Try again in 2 hours 5 minutes"


async def test_several_images_run_in_parallel_across_accounts_never_two_on_one(
    harness_with: HarnessFactory, tmp_path: Path
) -> None:
    async with harness_with(**codex_settings(tmp_path, accounts=2)) as gate:
        # 'meet' holds each account's first run until the other account's has begun: they succeed only together.
        jobs = await asyncio.gather(*(generate_on_codex(gate, f"meet {i}", count=2) for i in range(2)))
        assert [j.status_code for j in jobs] == [200, 200], [j.text for j in jobs]
        assert sum(j.json()["image_count"] for j in jobs) == 4
    homes = [tmp_path / "home0", tmp_path / "home1"]
    assert sum(len(exec_intervals(home)) for home in homes) == 4
    assert [overlaps(home) for home in homes] == [0, 0]  # never two runs at once on one account
    assert not any((home / "CONFLICT").exists() for home in homes)


async def wait_dead(pids: list[int]) -> None:
    """Until none of the processes runs (bounded)."""
    async with asyncio.timeout(10):
        while any(process_alive(pid) for pid in pids):
            await asyncio.sleep(0.05)


async def running_pids(harness: Harness) -> list[int]:
    """The fake's pid and its child's, once it has written them."""
    async with asyncio.timeout(10):
        while not list(codex_workdirs(harness).rglob("pids.txt")):
            await asyncio.sleep(0.02)
    (path,) = list(codex_workdirs(harness).rglob("pids.txt"))
    pids = [int(p) for p in path.read_text().split()]
    assert all(process_alive(pid) for pid in pids)
    return pids


async def test_timeout_stops_the_whole_process_group(harness_with: HarnessFactory, tmp_path: Path) -> None:
    async with harness_with(**codex_settings(tmp_path, timeout_seconds=1.5)) as gate:
        pending = asyncio.create_task(generate_on_codex(gate, "slow run"))
        pids = await running_pids(gate)
        response = await pending
        assert response.status_code == 504
        assert response.json()["error_code"] == "backend_timeout"
        await wait_dead(pids)


async def test_cancel_stops_the_whole_process_group(gate: Harness) -> None:
    auth = await gate.auth()
    job = (
        await gate.client.post(
            GENERATE, json={"prompt": "slow run", "model": "gpt-image-codex"}, headers={**auth, **ASYNC}
        )
    ).json()
    pids = await running_pids(gate)
    cancelled = await gate.client.post(f"/v1/images/jobs/{job['id']}/cancel", headers=auth)
    assert cancelled.json()["status"] == "cancelled"
    await wait_dead(pids)


async def test_shutdown_leaves_no_codex_process(harness_with: HarnessFactory, tmp_path: Path) -> None:
    async with harness_with(**codex_settings(tmp_path), shutdown_grace_seconds=0.2) as gate:
        auth = await gate.auth()
        await gate.client.post(
            GENERATE, json={"prompt": "slow run", "model": "gpt-image-codex"}, headers={**auth, **ASYNC}
        )
        pids = await running_pids(gate)
    await wait_dead(pids)


async def test_bypass_sandbox_only_when_configured(harness_with: HarnessFactory, tmp_path: Path) -> None:
    async with harness_with(
        **codex_settings(tmp_path, sandbox="bypass", model="gpt-5-codex", extra_args=["-c", "x=1"])
    ) as gate:
        assert (await generate_on_codex(gate, "ok")).status_code == 200
        (argv_file,) = codex_workdirs(gate).rglob("argv.json")
    argv = json.loads(argv_file.read_text())
    assert argv[:6] == [
        "exec",
        "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox",
        "-m",
        "gpt-5-codex",
        "-C",
    ]
    assert argv[-4:-2] == ["-c", "x=1"]


async def test_retention_removes_our_codex_caches_and_old_workdirs(gate: Harness, tmp_path: Path) -> None:
    assert (await generate_on_codex(gate, "to be swept")).status_code == 200
    home = tmp_path / "home0"
    assert list((home / "sessions").rglob("rollout-*.jsonl"))
    (workdir,) = list(codex_workdirs(gate).iterdir())
    backend = gate.app.state.services.jobs.backends.backends["codex"]
    assert await backend.sweep() == 0  # young: kept
    old = time.time() - 3 * 86_400
    os.utime(workdir, (old, old))
    assert await backend.sweep() >= 1
    assert not list((home / "sessions").rglob("rollout-*.jsonl"))
    old = time.time() - 8 * 86_400
    os.utime(workdir, (old, old))
    await backend.sweep()
    assert not workdir.exists()


def test_image_check_of_fit_keeps_the_aspect(tmp_path: Path) -> None:
    from imagegate.backends.base import BackendRequest, Operation
    from imagegate.backends.codex import fit

    buffer = io.BytesIO()
    Image.new("RGB", (1024, 1536)).save(buffer, format="PNG")
    request = BackendRequest(
        job_id="j",
        model="m",
        prompt="p",
        operation=Operation.GENERATE,
        width=300,
        height=100,
        quality="auto",
        output_format="jpeg",
        count=1,
        size="300x100",
    )
    data, delivered = fit(buffer.getvalue(), request)
    assert delivered == (1024, 1536)
    with Image.open(io.BytesIO(data)) as image:
        assert (image.size, image.format) == ((300, 100), "JPEG")


@pytest.mark.parametrize(
    ("dispatch", "expected"), [("primary-first", {"acct0": 2}), ("round-robin", {"acct0": 1, "acct1": 1})]
)
async def test_dispatch_order(
    harness_with: HarnessFactory, tmp_path: Path, dispatch: str, expected: dict[str, int]
) -> None:
    async with harness_with(**codex_settings(tmp_path, accounts=2, dispatch=dispatch)) as gate:
        assert (await generate_on_codex(gate, "one")).status_code == 200
        assert (await generate_on_codex(gate, "two")).status_code == 200
        assert await account_successes(gate) == expected


async def test_an_account_held_by_another_process_is_skipped(harness_with: HarnessFactory, tmp_path: Path) -> None:
    import fcntl

    (tmp_path / "home0").mkdir()
    with open(tmp_path / "home0" / ".imagegate.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as another ImageGate process would
        async with harness_with(**codex_settings(tmp_path, accounts=2)) as gate:
            assert (await generate_on_codex(gate, "elsewhere")).status_code == 200
            assert await account_successes(gate) == {"acct1": 1}


async def test_a_relative_data_dir_still_gives_codex_absolute_paths(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # `make serve` uses ./data, relative to where it runs
    async for gate in start(make_settings(database_url, Path("data"), **codex_settings(tmp_path))):
        response = await generate_on_codex(gate, "relative", reference_image_base64=b64(tiny_png()))
        assert response.status_code == 200, response.text
        (argv_file,) = (tmp_path / "data").rglob("argv.json")
    argv = json.loads(argv_file.read_text())
    assert Path(argv[argv.index("-C") + 1]).is_absolute()
    assert Path(argv[argv.index("--image") + 1]).is_absolute()
