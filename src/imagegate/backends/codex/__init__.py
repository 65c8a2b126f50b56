"""The Codex CLI backend: `$imagegen` through `codex exec`, on one or several ChatGPT accounts.

One exec per image, run without a shell, the prompt after `--`; each job gets its own workdir (kept until
retention); output is captured with a bound and kept only in the job's log.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from PIL import Image, ImageOps
from pydantic import BaseModel, Field

from imagegate.backends.base import BackendRequest, BackendResult, JobLog, OutputImage
from imagegate.backends.codex import outputs, process
from imagegate.backends.codex.accounts import Account, AccountPool, AllExhausted
from imagegate.db import utcnow
from imagegate.errors import BackendError, BackendTimeout, ContentRejected, ImagegateError, InvalidRequest
from imagegate.images import OUTPUT_FORMATS
from imagegate.settings import Settings

PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
SANDBOX_FLAGS = {
    "workspace-write": ["--sandbox", "workspace-write"],
    "read-only": ["--sandbox", "read-only"],
    "bypass": ["--dangerously-bypass-approvals-and-sandbox"],
}
SESSION_FILE = "sessions.txt"
CLEANED_MARK = ".caches-removed"


class AccountOption(BaseModel):
    """A Codex login: a name for statistics and its CODEX_HOME folder."""

    model_config = {"extra": "forbid"}

    name: str = Field(min_length=1, max_length=100)
    home: Path


class CodexOptions(BaseModel):
    """Options of the Codex backend."""

    model_config = {"extra": "forbid"}

    executable: str = "codex"
    model: str | None = Field(default=None, description="Passed as -m; Codex's default when unset.")
    extra_args: list[str] = Field(default_factory=list)
    timeout_seconds: float = Field(default=600.0, gt=0)
    kill_grace_seconds: float = Field(default=10.0, ge=0)
    sandbox: Literal["workspace-write", "read-only", "bypass"] = "workspace-write"
    accounts: list[AccountOption] = Field(default_factory=list)
    dispatch: Literal["round-robin", "primary-first"] = "primary-first"
    max_output_bytes: int = Field(default=64 * 1024, ge=1024)
    cache_max_age_hours: float = Field(default=48.0, gt=0)


class CodexBackend:
    """Makes images with Codex's $imagegen tool, one exec per image, never two on one account at once."""

    def __init__(self, *, name: str, options: Mapping[str, Any], settings: Settings) -> None:
        self.name = name
        self.options = CodexOptions.model_validate(dict(options))
        self.settings = settings
        configured = self.options.accounts or [
            AccountOption(name="default", home=Path(os.environ.get("CODEX_HOME", Path.home() / ".codex")))
        ]
        self.pool = AccountPool([Account(a.name, a.home.expanduser()) for a in configured], self.options.dispatch)
        # Absolute: codex runs with the workdir as its cwd and must also find it from -C and --image.
        self.workdirs = (settings.data_dir / "codex" / name).resolve()

    def check(self, request: BackendRequest) -> None:
        """Codex makes PNG, JPEG or WebP through our conversion; nothing else to refuse up front."""
        if request.output_format not in OUTPUT_FORMATS:
            raise InvalidRequest(f"output_format must be one of {', '.join(OUTPUT_FORMATS)}.", param="output_format")

    async def generate(self, request: BackendRequest, log: JobLog) -> BackendResult:
        """One exec per image: sequential per account, parallel across accounts; edits make one image."""
        workdir = self.workdirs / request.job_id
        count = 1 if request.is_edit else request.count
        if count < request.count:
            log.write(f"codex: edit mode makes 1 image (asked for {request.count})\n")
        inputs = await asyncio.to_thread(_write_inputs, workdir, request)
        results = await asyncio.gather(
            *(self._one_image(request, workdir, inputs, index, log) for index in range(count)),
            return_exceptions=True,
        )
        made = [r for r in results if isinstance(r, tuple)]
        errors = [r for r in results if isinstance(r, BaseException)]
        if not made:
            raise _first_error(errors)
        for error in errors:
            log.write(f"codex: one image failed ({type(error).__name__}: {error}); keeping the others\n")
        sizes = {
            "requested_size": request.size,
            "delivered_sizes": [f"{w}x{h}" for _image, (w, h) in made],
            "images_requested": request.count,
        }
        return BackendResult(images=[image for image, _size in made], metadata={"codex": sizes})

    async def _one_image(
        self, request: BackendRequest, workdir: Path, inputs: list[Path], index: int, log: JobLog
    ) -> tuple[OutputImage, tuple[int, int]]:
        tried: set[str] = set()
        while True:
            try:
                async with self.pool.hold(skip=tried) as account:
                    return await self._exec(request, workdir, inputs, index, account, log)
            except _QuotaReached as quota:
                tried.add(quota.account.name)
                self.pool.rest(quota.account, quota.resets_at)
                log.write(f"codex: account {quota.account.name} reached its usage limit; trying the next\n")
            except AllExhausted as exhausted:
                retry_after = max(int((exhausted.resets_at - utcnow()).total_seconds()), 1)
                raise _AccountsExhausted(
                    "Every Codex account has reached its usage limit; retry after the Retry-After seconds.",
                    headers={"Retry-After": str(retry_after)},
                ) from None

    async def _exec(
        self, request: BackendRequest, workdir: Path, inputs: list[Path], index: int, account: Account, log: JobLog
    ) -> tuple[OutputImage, tuple[int, int]]:
        run_dir = workdir / f"run-{index}"
        await asyncio.to_thread(run_dir.mkdir, parents=True, exist_ok=True)
        command = self.command(request, run_dir, inputs)
        started = utcnow()
        log.write(f"codex: image {index + 1} on account {account.name}\n")
        try:
            finished = await process.run(
                command,
                cwd=run_dir,
                env={**os.environ, "CODEX_HOME": str(account.home)},
                timeout=self.options.timeout_seconds,
                kill_grace=self.options.kill_grace_seconds,
                max_output_bytes=self.options.max_output_bytes,
            )
        except asyncio.CancelledError:
            log.usage(account.name, "cancelled")
            raise
        except OSError as exc:
            log.usage(account.name, "failure")
            raise BackendError("The Codex executable could not be started; tell the operator.") from exc
        log.write(f"--- stdout ---\n{finished.stdout}\n--- stderr ---\n{finished.stderr}\n")
        session = outputs.session_id(finished.stderr)
        if session:
            await asyncio.to_thread(_remember_session, workdir, session)
        found = await asyncio.to_thread(
            outputs.find_image, codex_home=account.home, session=session, workdir=run_dir, started=started
        )
        if found is None:
            raise self._no_image(finished, account, log)
        log.write(f"codex: image from {found.source}\n")
        try:
            data, delivered = await asyncio.to_thread(fit, found.data, request)
        except (OSError, ValueError, Image.DecompressionBombError):
            log.usage(account.name, "failure")
            raise BackendError("Codex produced a file that is not an image.") from None
        log.write(f"codex: delivered {delivered[0]}x{delivered[1]}, stored {request.width}x{request.height}\n")
        log.usage(account.name, "success", images=1)
        return OutputImage(data), delivered

    def _no_image(self, finished: process.Finished, account: Account, log: JobLog) -> ImagegateError | _QuotaReached:
        output = finished.stdout + "\n" + finished.stderr
        if finished.timed_out:
            log.usage(account.name, "timeout")
            return BackendTimeout(f"Codex did not finish within {self.options.timeout_seconds:.0f} s.")
        resets_at = outputs.quota_reset(output, utcnow())
        if resets_at is not None:
            log.usage(account.name, "quota")
            return _QuotaReached(account, resets_at)
        log.usage(account.name, "failure")
        if outputs.refused(finished.stdout):
            return ContentRejected("The model declined to make this image; change the prompt.")
        if finished.returncode:
            return BackendError(f"Codex exited with status {finished.returncode} without an image.")
        return BackendError("Codex finished without producing an image.")

    def command(self, request: BackendRequest, workdir: Path, inputs: list[Path]) -> list[str]:
        """The exec command line: every caller-supplied text after `--`, so nothing can pass for a flag."""
        command = [self.options.executable, "exec", "--skip-git-repo-check", *SANDBOX_FLAGS[self.options.sandbox]]
        if self.options.model:
            command += ["-m", self.options.model]
        command += ["-C", str(workdir)]
        for path in inputs:
            command += ["--image", str(path)]
        return [*command, *self.options.extra_args, "--", instruction(request, inputs)]

    async def sweep(self) -> int:
        """Remove Codex's caches of our sessions past cache_max_age_hours, and workdirs past retention."""
        return await asyncio.to_thread(self._sweep, time.time())

    def _sweep(self, now: float) -> int:
        removed = 0
        if not self.workdirs.is_dir():
            return 0
        cache_age = self.options.cache_max_age_hours * 3600
        keep_age = self.settings.retention_days * 86_400
        for workdir in self.workdirs.iterdir():
            age = now - workdir.stat().st_mtime
            if age > min(cache_age, keep_age) and not (workdir / CLEANED_MARK).exists():
                removed += self._remove_caches(workdir)
                (workdir / CLEANED_MARK).touch()
            if age > keep_age:
                shutil.rmtree(workdir, ignore_errors=True)
                removed += 1
        return removed

    def _remove_caches(self, workdir: Path) -> int:
        sessions_file = workdir / SESSION_FILE
        sessions = sessions_file.read_text().split() if sessions_file.exists() else []
        removed = 0
        for account in self.pool.accounts:
            for session in sessions:
                for rollout in (account.home / "sessions").glob(f"*/*/*/rollout-*{session}.jsonl"):
                    rollout.unlink(missing_ok=True)
                    removed += 1
                images = account.home / "generated_images" / session
                if images.is_dir():
                    shutil.rmtree(images, ignore_errors=True)
                    removed += 1
        return removed

    async def aclose(self) -> None:
        """Nothing held between jobs."""


class _QuotaReached(Exception):
    def __init__(self, account: Account, resets_at: datetime) -> None:
        super().__init__(f"{account.name} usage limit until {resets_at.isoformat()}")
        self.account = account
        self.resets_at = resets_at


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


def _write_inputs(workdir: Path, request: BackendRequest) -> list[Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, reference in enumerate(request.references):
        path = workdir / f"input-{index + 1}.{reference.format}"
        path.write_bytes(reference.data)
        paths.append(path)
    return paths


def _remember_session(workdir: Path, session: str) -> None:
    with open(workdir / SESSION_FILE, "a", encoding="utf-8") as handle:
        handle.write(session + "\n")


def fit(data: bytes, request: BackendRequest) -> tuple[bytes, tuple[int, int]]:
    """Codex ignores the asked size: crop to its aspect and resize, then encode; returns bytes and Codex's size."""
    with Image.open(io.BytesIO(data)) as source:
        delivered = source.size
        image = source.convert("RGBA" if request.output_format in ("png", "webp") else "RGB")
    if request.size != "auto" and image.size != (request.width, request.height):
        image = ImageOps.fit(image, (request.width, request.height), method=Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(
        buffer, format=PIL_FORMATS[request.output_format], **({"quality": 92} if request.output_format != "png" else {})
    )
    return buffer.getvalue(), delivered
