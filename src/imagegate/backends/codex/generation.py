"""Codex making images: one `codex exec` per image, the next account when one is at its limit or repeats itself.

Each image runs under an account's lock (pool.hold, then backend.run_on); its output is found, checked against
the hashes of earlier outputs (a session handed back an old image) and fitted to the size asked for.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from imagegate.backends.base import BackendRequest, BackendResult, JobReporter, OutputImage
from imagegate.backends.codex import outputs, process, workdirs
from imagegate.backends.codex.accounts import Account, AllExhausted
from imagegate.db import utcnow
from imagegate.errors import BackendError, BackendTimeout, ContentRejected, ImagegateError

if TYPE_CHECKING:
    from imagegate.backends.codex import CodexBackend

SANDBOX_FLAGS = {
    "workspace-write": ["--sandbox", "workspace-write"],
    "read-only": ["--sandbox", "read-only"],
    "bypass": ["--dangerously-bypass-approvals-and-sandbox"],
}
OUTPUT_EVENT = "output"
Made = tuple[OutputImage, tuple[int, int]]  # an image and the size Codex delivered it in


async def generate(backend: CodexBackend, request: BackendRequest, reporter: JobReporter) -> BackendResult:
    """One exec per image: sequential per account, parallel across accounts; edits make one image."""
    await backend.sync()
    workdir = backend.workdirs / request.job_id
    count = 1 if request.is_edit else request.count
    if count < request.count:
        reporter.write(f"codex: edit mode makes 1 image (asked for {request.count})\n")
    inputs = await asyncio.to_thread(workdirs.write_inputs, workdir, request)
    results = await asyncio.gather(
        *(_one_image(backend, request, workdir, inputs, index, reporter) for index in range(count)),
        return_exceptions=True,
    )
    made = [r for r in results if isinstance(r, tuple)]
    errors = [r for r in results if isinstance(r, BaseException)]
    if not made:
        raise _first_error(errors)
    for error in errors:
        reporter.write(f"codex: one image failed ({type(error).__name__}: {error}); keeping the others\n")
    sizes = {
        "requested_size": request.size,
        "delivered_sizes": [f"{w}x{h}" for _image, (w, h) in made],
        "images_requested": request.count,
    }
    return BackendResult(images=[image for image, _size in made], metadata={"codex": sizes})


async def _one_image(
    backend: CodexBackend, request: BackendRequest, workdir: Path, inputs: list[Path], index: int, reporter: JobReporter
) -> Made:
    tried: set[str] = set()
    duplicates = 0
    while True:
        try:
            async with backend.pool.hold(skip=tried | await backend.low_quota(tried)) as account:
                return await _exec(backend, request, workdir, inputs, index, account, reporter)
        except _QuotaReached as quota:
            tried.add(quota.account.name)
            await backend.rest(quota.account, quota.resets_at)
            reporter.write(f"codex: account {quota.account.name} reached its usage limit; trying the next\n")
        except _DuplicateOutput as duplicate:
            tried.add(duplicate.account.name)
            duplicates += 1
            reporter.write(f"codex: account {duplicate.account.name} handed back an earlier image; trying the next\n")
        except AllExhausted as exhausted:
            if duplicates:
                raise BackendError("Codex handed back an image it had made before; try again later.") from None
            retry_after = max(int((exhausted.resets_at - utcnow()).total_seconds()), 1)
            raise _AccountsExhausted(
                "Every Codex account has reached its usage limit; retry after the Retry-After seconds.",
                headers={"Retry-After": str(retry_after)},
            ) from None


async def _exec(
    backend: CodexBackend,
    request: BackendRequest,
    workdir: Path,
    inputs: list[Path],
    index: int,
    account: Account,
    reporter: JobReporter,
) -> Made:
    run_dir = await asyncio.to_thread(workdirs.fresh_run_dir, workdir, index)
    started = utcnow()
    reporter.write(f"codex: image {index + 1} on account {account.name}\n")
    finished = await backend.run_on(
        account, command(backend, request, run_dir, inputs), run_dir, reporter, job_id=request.job_id
    )
    reporter.write(f"--- stdout ---\n{finished.stdout}\n--- stderr ---\n{finished.stderr}\n")
    session = outputs.session_id(finished.stderr)
    if session:
        await asyncio.to_thread(workdirs.remember_session, workdir, session)
    found = await asyncio.to_thread(
        outputs.find_image, codex_home=account.home, session=session, workdir=run_dir, started=started
    )
    if found is None:
        raise await _no_image(backend, finished, account, reporter, instruction(request, inputs), session)
    reporter.write(f"codex: image from {found.source}\n")
    return await _deliver(backend, request, found.data, account, reporter)


async def _deliver(
    backend: CodexBackend, request: BackendRequest, found: bytes, account: Account, reporter: JobReporter
) -> Made:
    """The image Codex saved, refused when it repeats an earlier one, fitted to the size asked for."""
    digest = hashlib.sha256(found).hexdigest()
    if backend.store is not None and await backend.store.has_event(OUTPUT_EVENT, digest):
        reporter.usage(account.name, "duplicate")
        raise _DuplicateOutput(account)
    try:
        data, delivered = await asyncio.to_thread(outputs.fit, found, request)
    except (OSError, ValueError, Image.DecompressionBombError):
        reporter.usage(account.name, "failure")
        raise BackendError("Codex produced a file that is not an image.") from None
    reporter.write(f"codex: delivered {delivered[0]}x{delivered[1]}, stored {request.width}x{request.height}\n")
    reporter.usage(account.name, "success", images=1)
    if backend.store is not None:
        await backend.store.add_event(OUTPUT_EVENT, subject=account.name, key=digest, job_id=request.job_id)
    return OutputImage(data), delivered


async def _no_image(
    backend: CodexBackend,
    finished: process.Finished,
    account: Account,
    reporter: JobReporter,
    asked: str,
    session: str | None,
) -> ImagegateError | _QuotaReached:
    if finished.timed_out:
        reporter.usage(account.name, "timeout")
        return BackendTimeout(f"Codex did not finish within {backend.options.timeout_seconds:.0f} s.")
    errors = await asyncio.to_thread(
        outputs.codex_errors, stderr=finished.stderr, instruction=asked, codex_home=account.home, session=session
    )
    resets_at = outputs.quota_reset(errors, utcnow())
    if resets_at is not None:
        reporter.usage(account.name, "quota")
        return _QuotaReached(account, resets_at)
    reporter.usage(account.name, "failure")
    if outputs.refused(finished.stdout, asked):
        return ContentRejected("The model declined to make this image; change the prompt.")
    if finished.returncode:
        return BackendError(f"Codex exited with status {finished.returncode} without an image.")
    return BackendError("Codex finished without producing an image.")


def command(backend: CodexBackend, request: BackendRequest, workdir: Path, inputs: list[Path]) -> list[str]:
    """The exec command line: every caller-supplied text after `--`, so nothing can pass for a flag."""
    options = backend.options
    line = [options.executable, "exec", "--skip-git-repo-check", *SANDBOX_FLAGS[options.sandbox]]
    if options.model:
        line += ["-m", options.model]
    line += ["-C", str(workdir)]
    for path in inputs:
        line += ["--image", str(path)]
    return [*line, *options.extra_args, "--", instruction(request, inputs)]


def instruction(request: BackendRequest, inputs: list[Path]) -> str:
    """What Codex is asked: $imagegen with the prompt, size and quality (and the inputs in edit mode)."""
    size = "" if request.size == "auto" else f" Size: {request.width}x{request.height}."
    quality = "" if request.quality == "auto" else f" Quality: {request.quality}."
    if inputs:
        names = ", ".join(path.name for path in inputs)
        return (
            f"Use $imagegen to edit the attached image(s) ({names}) as follows: {request.prompt}\n"
            f"{size}{quality} Make exactly one image and save it in the current folder."
        )
    return f"Use $imagegen to create an image: {request.prompt}\n{size}{quality} Make exactly one image."


class _QuotaReached(Exception):
    def __init__(self, account: Account, resets_at: datetime) -> None:
        super().__init__(f"{account.name} usage limit until {resets_at.isoformat()}")
        self.account = account
        self.resets_at = resets_at


class _DuplicateOutput(Exception):
    def __init__(self, account: Account) -> None:
        super().__init__(f"{account.name} handed back an earlier image")
        self.account = account


class _AccountsExhausted(ImagegateError):
    """Every Codex account has reached its usage limit."""

    status = 429
    code = "rate_limit_exceeded"


def _first_error(errors: list[BaseException]) -> BaseException:
    for error in errors:
        if isinstance(error, asyncio.CancelledError):
            return error
    for error in errors:
        if isinstance(error, ImagegateError):
            return error
    return errors[0] if errors else BackendError("Codex produced no image.")
