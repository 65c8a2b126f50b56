"""Codex accounts as a fleet: prompt echoes, live quota, rests and dispatch shared through the database,
duplicate outputs, token health and audit, the keep-alive, the exec's environment, and the mask."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from imagegate.backends.codex import CodexBackend
from imagegate.cli import app as cli
from tests.fakes.backends import tiny_png
from tests.fakes.chatgpt_usage import fake_usage_endpoint, hours_ago, usage, window
from tests.fakes.chatgpt_usage import login as codex_login
from tests.fakes.codex import exec_intervals
from tests.helpers import (
    Harness,
    HarnessFactory,
    account_successes,
    codex_settings,
    codex_workdirs,
    csrf_of,
    generate_on_codex,
    login,
    make_settings,
    start,
    stored_job,
)

ECHOED_LIMITS = [
    "no-output poster: ERROR: You've hit your usage limit (usage_limit_reached). Try again in 10 days.",
    "no-output\nERROR: usage limit reached\nresets_in_seconds: 864000\n2026-12-01T10:00:00Z ERROR codex: 429",
]


def backend_of(harness: Harness) -> CodexBackend:
    """The app's Codex backend."""
    backend = harness.app.state.services.jobs.backends.backends["codex"]
    assert isinstance(backend, CodexBackend)
    return backend


@pytest.mark.parametrize("prompt", ECHOED_LIMITS)
async def test_a_prompt_that_quotes_a_usage_limit_rests_no_account(
    harness_with: HarnessFactory, tmp_path: Path, prompt: str
) -> None:
    async with harness_with(**codex_settings(tmp_path, accounts=2)) as gate:
        failed = await generate_on_codex(gate, prompt)
        assert failed.status_code == 502, failed.text  # no image, and no usage limit of Codex's own
        assert failed.json()["error_code"] == "backend_error"
        assert await backend_of(gate).store.values("rest:") == {}  # type: ignore[union-attr]
        innocent = await generate_on_codex(gate, "a quiet lake")
        assert innocent.status_code == 200, innocent.text
        assert (await account_successes(gate))["acct0"] == 1  # the first account was not rested


async def test_a_prompt_that_quotes_a_refusal_is_not_a_refusal(gate: Harness) -> None:
    response = await generate_on_codex(
        gate, "no-output: a sign reading 'I can't help create that, it may violate policy'"
    )
    assert response.status_code == 502
    assert response.json()["error_code"] == "backend_error"


async def test_a_usage_limit_in_the_rollout_rests_the_account(harness_with: HarnessFactory, tmp_path: Path) -> None:
    async with harness_with(**codex_settings(tmp_path, accounts=1)) as gate:
        response = await generate_on_codex(gate, "quota-rollout")
        assert response.status_code == 429
        assert 500 <= int(response.headers["retry-after"]) <= 600
        assert "rest:acct0" in await backend_of(gate).store.values("rest:")  # type: ignore[union-attr]


@pytest.fixture
async def gate(harness_with: HarnessFactory, tmp_path: Path) -> Any:
    """One Codex account."""
    async with harness_with(**codex_settings(tmp_path)) as running:
        yield running


async def test_an_edit_mask_is_refused_with_a_400(gate: Harness) -> None:
    response = await gate.client.post(
        "/v1/images/edits",
        data={"prompt": "make it red", "model": "gpt-image-codex"},
        files={"image": ("a.png", tiny_png(), "image/png"), "mask": ("m.png", tiny_png((0, 0, 0)), "image/png")},
        headers=await gate.auth(),
    )
    assert response.status_code == 400
    assert "mask" in response.json()["error"]["message"]
    assert not codex_workdirs(gate).exists() or not list(codex_workdirs(gate).rglob("argv.json"))


async def test_codex_sees_only_the_environment_it_needs(
    harness_with: HarnessFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGEGATE_ADMIN_PASSWORD", "admin-secret")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-provider-secret")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    async with harness_with(**codex_settings(tmp_path, env={"RUST_LOG": "warn"})) as gate:
        assert (await generate_on_codex(gate, "an owl")).status_code == 200
        (env_file,) = codex_workdirs(gate).rglob("env.json")
    env = json.loads(env_file.read_text())
    assert "IMAGEGATE_ADMIN_PASSWORD" not in env
    assert "OPENAI_API_KEY" not in env
    assert "admin-secret" not in env_file.read_text()
    assert env["CODEX_HOME"] == str(tmp_path / "home0")
    assert env["PATH"] == os.environ["PATH"]
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:3128"
    assert env["LC_ALL"] == "C.UTF-8"
    assert env["RUST_LOG"] == "warn"


async def test_an_image_codex_made_before_is_retried_on_the_next_account(
    harness_with: HarnessFactory, tmp_path: Path
) -> None:
    async with harness_with(**codex_settings(tmp_path, accounts=2)) as gate:
        first = await generate_on_codex(gate, "same-image lighthouse")
        assert first.status_code == 200, first.text
        (tmp_path / "home1").mkdir(exist_ok=True)
        (tmp_path / "home1" / "fresh").touch()  # the second account makes a new image
        again = await generate_on_codex(gate, "same-image lighthouse")
        assert again.status_code == 200, again.text
        assert await account_successes(gate) == {"acct0": 1, "acct1": 1}
        job = await stored_job(gate, again.json()["id"])
        assert "handed back an earlier image" in job.logs
        (tmp_path / "home1" / "fresh").unlink()
        spent = await generate_on_codex(gate, "same-image lighthouse")
        assert spent.status_code == 502
        assert "made before" in spent.json()["error"]


async def test_min_quota_skips_low_accounts_unless_every_one_is_low(
    harness_with: HarnessFactory, tmp_path: Path
) -> None:
    with fake_usage_endpoint() as endpoint:
        codex_login(tmp_path / "home0", "tok-low")
        codex_login(tmp_path / "home1", "tok-high")
        endpoint.answers = {"tok-low": usage(window(97.5, 18_000)), "tok-high": usage(window(20, 18_000))}
        settings = codex_settings(tmp_path, accounts=2, usage_url=endpoint.url, min_quota_percent=5)
        async with harness_with(**settings) as gate:
            assert (await generate_on_codex(gate, "one")).status_code == 200
            assert await account_successes(gate) == {"acct1": 1}  # acct0 has 2.5 % left: skipped
            endpoint.answers["tok-high"] = usage(window(99, 18_000))
            backend_of(gate).quota.forget()
            assert (await generate_on_codex(gate, "two")).status_code == 200
            assert await account_successes(gate) == {"acct0": 1, "acct1": 1}  # all low: the first again
            endpoint.answers = {}  # 401 for both: unknown counts as usable
            backend_of(gate).quota.forget()
            assert (await generate_on_codex(gate, "three")).status_code == 200
            assert await account_successes(gate) == {"acct0": 2, "acct1": 1}


async def test_a_rest_is_seen_by_another_process(database_url: str, tmp_path: Path) -> None:
    settings = codex_settings(tmp_path, accounts=2)
    (tmp_path / "home0").mkdir()
    (tmp_path / "home0" / "exhausted").touch()
    async for first in start(make_settings(database_url, tmp_path / "one", **settings)):
        assert (await generate_on_codex(first, "first")).status_code == 200  # acct0 hit its limit, acct1 made it
    (tmp_path / "home0" / "exhausted").unlink()  # acct0 would work now, if anyone asked it
    async for second in start(make_settings(database_url, tmp_path / "two", **settings)):
        assert (await generate_on_codex(second, "second")).status_code == 200
    assert len(exec_intervals(tmp_path / "home0")) == 1  # the second process never spent an exec on it
    assert len(exec_intervals(tmp_path / "home1")) == 2


async def admin_client(harness: Harness) -> None:
    """Log the harness's client in to the admin."""
    assert (await login(harness.client)).status_code == 303


async def test_dispatch_switched_in_the_admin_holds_for_every_process(database_url: str, tmp_path: Path) -> None:
    settings = codex_settings(tmp_path, accounts=2, dispatch="primary-first")
    async for first in start(make_settings(database_url, tmp_path / "one", **settings)):
        await admin_client(first)
        page = await first.client.get("/admin/backends/codex")
        assert page.status_code == 200
        assert '<option value="primary-first" selected>' in page.text
        saved = await first.client.post(
            "/admin/backends/codex/dispatch", data={"csrf": csrf_of(page), "dispatch": "round-robin"}
        )
        assert saved.status_code == 303
        shown = await first.client.get("/admin/backends/codex")
        assert "dispatch is now round-robin" in shown.text
        assert '<option value="round-robin" selected>' in shown.text
        refused = await first.client.post(
            "/admin/backends/codex/dispatch", data={"csrf": csrf_of(page), "dispatch": "random"}
        )
        assert refused.status_code == 400
    async for second in start(make_settings(database_url, tmp_path / "two", **settings)):
        assert (await generate_on_codex(second, "one")).status_code == 200
        assert (await generate_on_codex(second, "two")).status_code == 200
        assert await account_successes(second) == {"acct0": 1, "acct1": 1}


async def test_the_accounts_page_shows_every_account_with_its_quota_and_token_health(
    harness_with: HarnessFactory, tmp_path: Path
) -> None:
    with fake_usage_endpoint() as endpoint:
        codex_login(tmp_path / "home0", "tok-two", last_refresh=hours_ago(2 * 24))
        codex_login(tmp_path / "home1", "tok-weekly", last_refresh=hours_ago(8 * 24))
        codex_login(tmp_path / "home2", "tok-malformed")
        codex_login(tmp_path / "home3", "tok-expired", last_refresh=hours_ago(31 * 24))
        endpoint.answers = {
            "tok-two": usage(window(37.0, 18_000), window(12.5, 604_800)),
            "tok-weekly": usage(window(60, 604_800), None, plan="team"),
            "tok-malformed": b'{"rate_limit": {"primary_window": {"used_percent": "lots"',
            "tok-expired": 401,
        }
        settings = codex_settings(tmp_path, accounts=5, usage_url=endpoint.url)
        async with harness_with(**settings) as gate:
            await admin_client(gate)
            assert (await generate_on_codex(gate, "one")).status_code == 200
            page = await gate.client.get("/admin/backends/codex")
            assert page.status_code == 200
            again = await gate.client.get("/admin/backends/codex")
    assert endpoint.requests.count("tok-two") == 1  # cached between the two page loads
    cards = {name: card for name, card in _cards(page.text)}
    assert list(cards) == ["acct0", "acct1", "acct2", "acct3", "acct4"]  # acct4 has never been used or logged in
    assert "5h: 63 % left" in cards["acct0"]
    assert "weekly: 88 % left" in cards["acct0"]
    assert "resets 2026-11-22" in cards["acct0"]
    assert "weekly: 40 % left" in cards["acct1"]
    assert "5h" not in cards["acct1"].split("Quota")[1].split("Token age")[0]
    assert "team" in cards["acct1"]
    for name in ("acct2", "acct3", "acct4"):  # malformed answer, 401, no login at all
        assert re.search(r'<dd class="quota">\s*unknown\s*</dd>', cards[name]), cards[name]
    assert "(green)" in cards["acct0"]
    assert "(amber)" in cards["acct1"]
    assert "(red)" in cards["acct3"]
    assert "acc01234" in cards["acct0"]
    assert "acc012345" not in page.text
    assert '<dd class="rate">100 %</dd>' in cards["acct0"]  # its 24-hour success rate
    assert '<dd class="rate">-</dd>' in cards["acct1"]
    for secret in ("tok-two", "tok-weekly", "rt-secret-1", "id-secret"):
        assert secret not in page.text
        assert secret not in again.text


def _cards(html: str) -> list[tuple[str, str]]:
    parts = html.split('<section class="card account" data-account="')[1:]
    return [(part.split('"', 1)[0], part.split("</section>", 1)[0]) for part in parts]


async def test_token_rotation_is_audited_by_fingerprint_never_by_token(
    harness_with: HarnessFactory, tmp_path: Path, database_url: str
) -> None:
    codex_login(tmp_path / "home0", "tok-a", refresh_token="rt-before-rotation")
    (tmp_path / "home0" / "rotate").touch()
    async with harness_with(**codex_settings(tmp_path)) as gate:
        response = await generate_on_codex(gate, "a fox")
        assert response.status_code == 200
        job = await stored_job(gate, response.json()["id"])
        assert "token audit acct0: refresh token" in job.logs
        assert "(rotated)" in job.logs
        await admin_client(gate)
        page = await gate.client.get("/admin/backends/codex")
    rotated = json.loads((tmp_path / "home0" / "auth.json").read_text())["tokens"]["refresh_token"]
    env = _cli_env(database_url, tmp_path)
    listed = await asyncio.to_thread(CliRunner().invoke, cli, ["codex", "tokens"], env=env)
    assert listed.exit_code == 0, listed.output
    assert "acct0" in listed.output
    assert "rotated" in listed.output
    assert response.json()["id"] in listed.output
    as_json = await asyncio.to_thread(CliRunner().invoke, cli, ["codex", "tokens", "--json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    events = json.loads(as_json.stdout)["codex"]
    assert [(e["account"], e["job_id"]) for e in events if e["reason"] == "rotated"] == [("acct0", job.id)]
    for text in (listed.output, as_json.stdout, job.logs, page.text):
        assert "rt-before-rotation" not in text
        assert rotated not in text
    assert "rotated" in page.text


def _cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    backends = {"codex": {"type": "codex", "options": codex_settings(tmp_path)["backends"]["codex"].options}}
    return {
        "IMAGEGATE_DATABASE_URL": database_url,
        "IMAGEGATE_DATA_DIR": str(tmp_path / "data"),
        "IMAGEGATE_BACKENDS": json.dumps(backends),
        "IMAGEGATE_MODELS": json.dumps({"gpt-image-codex": "codex"}),
        "IMAGEGATE_DEFAULT_MODEL": "gpt-image-codex",
    }


async def test_keepalive_touches_idle_accounts_under_their_lock(
    harness_with: HarnessFactory, tmp_path: Path, database_url: str
) -> None:
    import fcntl

    async with harness_with(**codex_settings(tmp_path, accounts=3)) as gate:
        assert (await generate_on_codex(gate, "recent work")).status_code == 200  # acct0 was just used
    (tmp_path / "home2").mkdir(exist_ok=True)
    env = _cli_env(database_url, tmp_path)
    env["IMAGEGATE_BACKENDS"] = json.dumps(
        {"codex": {"type": "codex", "options": codex_settings(tmp_path, accounts=3)["backends"]["codex"].options}}
    )
    with open(tmp_path / "home2" / ".imagegate.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process runs on acct2 right now
        result = await asyncio.to_thread(CliRunner().invoke, cli, ["codex", "keepalive"], env=env)
    assert result.exit_code == 0, result.output
    assert "codex/acct0: used at" in result.output
    assert "codex/acct1: touched" in result.output
    assert "codex/acct2: busy" in result.output
    assert len(exec_intervals(tmp_path / "home1")) == 1
    assert not (tmp_path / "home2" / "execs.log").exists()
