"""Codex reading images: `codex exec` in the read-only sandbox with `--image` per input; its final message answers.

It runs under the same per-account lock as generation (pool.hold, then backend.run_on: the lock inherited by
the exec, its token audited): two processes touching one account's auth.json at once can trip refresh-token
reuse, which revokes every session of that ChatGPT user.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagegate.backends.base import JobReporter, VisionRequest
from imagegate.backends.codex import outputs
from imagegate.backends.codex.accounts import Account, AllExhausted
from imagegate.db import utcnow
from imagegate.errors import BackendError, BackendTimeout, UpstreamRateLimited

ANSWER_FILE = "last-message.txt"
# Transcript labels that are not part of an answer printed on stdout.
ROLE_LABEL = re.compile(r"^(user|codex|assistant|thinking|exec)\s*:?\s*$", re.IGNORECASE)

if TYPE_CHECKING:
    from imagegate.backends.codex import CodexBackend


async def describe(backend: CodexBackend, request: VisionRequest, reporter: JobReporter) -> str:
    """Ask Codex about the images on the first free account; an account at its usage limit passes it on."""
    await backend.sync()
    workdir = backend.workdirs / request.request_id
    inputs = await asyncio.to_thread(_write_images, workdir, request)
    tried: set[str] = set()
    while True:
        try:
            async with backend.pool.hold(skip=tried | await backend.low_quota(tried)) as account:
                answer = await _exec(backend, request, workdir, inputs, account, reporter)
        except AllExhausted as exhausted:
            retry_after = max(int((exhausted.resets_at - utcnow()).total_seconds()), 1)
            raise UpstreamRateLimited(
                "Every Codex account has reached its usage limit; retry after the Retry-After seconds.",
                headers={"Retry-After": str(retry_after)},
            ) from None
        if isinstance(answer, str):
            return answer
        tried.add(answer.name)


def command(backend: CodexBackend, workdir: Path, inputs: list[Path], prompt: str) -> list[str]:
    """The exec command line: read-only sandbox, the images, the answer file; the prompt after `--`."""
    line = [backend.options.executable, "exec", "--skip-git-repo-check", "--sandbox", "read-only"]
    if backend.options.model:
        line += ["-m", backend.options.model]
    line += ["-C", str(workdir)]
    for path in inputs:
        line += ["--image", str(path)]
    line += ["--output-last-message", str(workdir / ANSWER_FILE)]
    return [*line, *backend.options.extra_args, "--", prompt]


async def _exec(
    backend: CodexBackend,
    request: VisionRequest,
    workdir: Path,
    inputs: list[Path],
    account: Account,
    reporter: JobReporter,
) -> str | Account:
    """The answer, or the account when it reached its usage limit (rested; the caller tries the next)."""
    reporter.write(f"codex: vision on account {account.name}\n")
    finished = await backend.run_on(
        account, command(backend, workdir, inputs, request.prompt), workdir, reporter, job_id=request.request_id
    )
    reporter.write(f"--- stdout ---\n{finished.stdout}\n--- stderr ---\n{finished.stderr}\n")
    session = outputs.session_id(finished.stderr)
    answer = await asyncio.to_thread(
        final_message, workdir / ANSWER_FILE, account.home, session, finished.stdout, request.prompt
    )
    if answer:
        reporter.usage(account.name, "success")
        return answer
    if finished.timed_out:
        reporter.usage(account.name, "timeout")
        raise BackendTimeout(f"Codex did not answer within {backend.options.timeout_seconds:.0f} s.")
    errors = await asyncio.to_thread(
        outputs.codex_errors,
        stderr=finished.stderr,
        instruction=request.prompt,
        codex_home=account.home,
        session=session,
    )
    resets_at = outputs.quota_reset(errors, utcnow())
    if resets_at is not None:
        reporter.usage(account.name, "quota")
        await backend.rest(account, resets_at)
        reporter.write(f"codex: account {account.name} reached its usage limit; trying the next\n")
        return account
    reporter.usage(account.name, "failure")
    if finished.returncode:
        raise BackendError(f"Codex exited with status {finished.returncode} without an answer.")
    raise BackendError("Codex finished without an answer about the image(s).")


def final_message(answer_file: Path, codex_home: Path, session: str | None, stdout: str, prompt: str) -> str:
    """Codex's final message: the --output-last-message file, else the rollout's last agent message, else stdout
    without the echoed prompt and transcript labels."""
    if answer_file.is_file():
        text = answer_file.read_text(encoding="utf-8", errors="replace").strip()
        if text:
            return text
    if session:
        for rollout in sorted((codex_home / "sessions").glob(f"*/*/*/rollout-*{session}.jsonl"), reverse=True):
            text = last_agent_message(rollout)
            if text:
                return text
    own = outputs.without_echo(outputs.strip_ansi(stdout), prompt).splitlines()
    return "\n".join(line for line in own if line.strip() and not ROLE_LABEL.match(line.strip())).strip()


def last_agent_message(rollout: Path) -> str:
    """The last agent message a rollout records ('' when none), read a line at a time."""
    found = ""
    with open(rollout, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if "agent_message" not in line and "assistant" not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            found = _message_in(record) or found
    return found.strip()


def _message_in(record: Any) -> str:
    payload = record.get("payload") if isinstance(record, dict) else None
    if not isinstance(payload, dict):
        return ""
    if payload.get("type") == "agent_message" and isinstance(payload.get("message"), str):
        return str(payload["message"])
    if payload.get("type") == "message" and payload.get("role") == "assistant":
        content = payload.get("content")
        parts: list[Any] = content if isinstance(content, list) else []
        return "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict) and p.get("type") == "output_text")
    return ""


def _write_images(workdir: Path, request: VisionRequest) -> list[Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(request.images):
        path = workdir / f"input-{index + 1}.{image.format}"
        path.write_bytes(image.data)
        paths.append(path)
    return paths
