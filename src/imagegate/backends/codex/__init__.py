"""The Codex CLI backend: `$imagegen` through `codex exec`, on one or several ChatGPT accounts.

One exec per image, run without a shell, the prompt after `--`; each job gets its own workdir (kept until
retention); output is captured with a bound and kept only in the job's log. Dispatch mode, rests, the token
audit and output hashes live in the database (the BackendStore), so every process sees the same.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagegate.backends.base import (
    AdminPanel,
    BackendRequest,
    BackendResult,
    JobReporter,
    RequestShape,
    VisionRequest,
)
from imagegate.backends.codex import generation, process, tokens, vision, workdirs
from imagegate.backends.codex.accounts import Account, AccountPool, Dispatch
from imagegate.backends.codex.generation import OUTPUT_EVENT, instruction
from imagegate.backends.codex.options import PASSED_ENV, PASSED_ENV_PREFIXES, PROXY_ENV, AccountOption, CodexOptions
from imagegate.backends.codex.outputs import fit
from imagegate.backends.codex.quota import Quota, QuotaReader
from imagegate.backends.store import BackendStore
from imagegate.db import utcnow
from imagegate.errors import BackendError, InvalidRequest
from imagegate.images import OUTPUT_FORMATS
from imagegate.settings import Settings

__all__ = ["AccountOption", "CodexBackend", "CodexOptions", "fit", "instruction"]
DISPATCH_KEY, REST_PREFIX, LAST_RUN_PREFIX, TOKEN_EVENT = "dispatch", "rest:", "last_run:", "token"

if TYPE_CHECKING:
    import typer


class CodexBackend:
    """Makes images with Codex's $imagegen tool, one exec per image, never two on one account at once."""

    def __init__(self, *, name: str, options: Mapping[str, Any], settings: Settings) -> None:
        self.name = name
        self.options = CodexOptions.model_validate(dict(options))
        self.settings = settings
        configured = self.options.accounts or [
            AccountOption(name="default", home=Path(os.environ.get("CODEX_HOME", Path.home() / ".codex")))
        ]
        self.pool = AccountPool(
            [Account(a.name, a.home.expanduser()) for a in configured],
            self.options.dispatch,
            kill_grace=self.options.kill_grace_seconds,
        )
        # Absolute: codex runs with the workdir as its cwd and must also find it from -C and --image.
        self.workdirs = (settings.data_dir / "codex" / name).resolve()
        self.store: BackendStore | None = None
        self.quota = QuotaReader(self.options.usage_url)

    async def start(self, store: BackendStore) -> None:
        """Keep the store: dispatch mode, rests, token audit and output hashes live in the database."""
        self.store = store
        await self.sync()

    def admin_panel(self) -> AdminPanel:
        """The Codex accounts page: every account's quota, token health, rests and statistics."""
        from imagegate.backends.codex.panel import accounts_panel

        return accounts_panel(self)

    @classmethod
    def cli_commands(cls) -> tuple[str, typer.Typer]:
        """`imagegate codex tokens` and `imagegate codex keepalive`."""
        from imagegate.backends.codex.cli import codex_app

        return "codex", codex_app

    async def sync(self) -> None:
        """Take the dispatch mode and the rests every process sees from the database."""
        if self.store is None:
            return
        stored = await self.store.values()
        mode = stored.get(DISPATCH_KEY)
        self.pool.dispatch = mode if mode in ("round-robin", "primary-first") else self.options.dispatch
        for account in self.pool.accounts:
            rest = stored.get(REST_PREFIX + account.name)
            until = _parse_time(rest.get("until")) if isinstance(rest, dict) else None
            account.exhausted_until = until

    async def set_dispatch(self, mode: Dispatch) -> None:
        """Store the dispatch mode for every process; it overrides the configured one."""
        if self.store is not None:
            await self.store.put(DISPATCH_KEY, mode)
        self.pool.dispatch = mode

    async def rest(self, account: Account, until: datetime) -> None:
        """Rest an account until its limit resets, in every process (no exec is spent to learn it again)."""
        self.pool.rest(account, until)
        if self.store is not None:
            await self.store.put(REST_PREFIX + account.name, {"until": until.isoformat()})

    async def wake(self, account: Account) -> None:
        """End an account's rest (the operator knows better), in every process."""
        account.exhausted_until = None
        if self.store is not None:
            await self.store.remove(REST_PREFIX + account.name)

    async def keepalive(self, idle_hours: float | None = None) -> list[tuple[str, str]]:
        """Touch each account idle for idle_hours with a tiny exec under its lock, so its login stays fresh."""
        await self.sync()
        idle = timedelta(hours=idle_hours if idle_hours is not None else self.options.keepalive_idle_hours)
        last_runs = await self.store.values(LAST_RUN_PREFIX) if self.store else {}
        results = []
        for account in self.pool.accounts:
            last = _parse_time(last_runs.get(LAST_RUN_PREFIX + account.name))
            if last is not None and utcnow() - last < idle:
                results.append((account.name, f"used at {last:%Y-%m-%d %H:%M} UTC; left alone"))
                continue
            async with self.pool.hold_if_free(account) as held:
                results.append((account.name, await self._touch(account) if held else "busy; left alone"))
        return results

    async def _touch(self, account: Account) -> str:
        run_dir = self.workdirs / "keepalive" / account.name
        await asyncio.to_thread(run_dir.mkdir, parents=True, exist_ok=True)
        command = [self.options.executable, "exec", "--skip-git-repo-check", "--sandbox", "read-only"]
        command += ["-C", str(run_dir), "--", self.options.keepalive_prompt]
        reporter = JobReporter(self.options.max_output_bytes)
        try:
            finished = await self.run_on(account, command, run_dir, reporter)
        except BackendError as error:
            return f"failed: {error.message}"
        if finished.timed_out:
            return "timed out"
        return "touched" if finished.returncode == 0 else f"failed (exit status {finished.returncode})"

    def check(self, request: RequestShape) -> None:
        """Codex makes PNG, JPEG or WebP through our conversion, and cannot apply a mask."""
        if request.output_format not in OUTPUT_FORMATS:
            raise InvalidRequest(f"output_format must be one of {', '.join(OUTPUT_FORMATS)}.", param="output_format")
        if request.mask is not None:
            raise InvalidRequest(
                "This model cannot apply an edit mask; send the edit without one and say in the prompt what to change.",
                param="mask",
            )

    async def generate(self, request: BackendRequest, reporter: JobReporter) -> BackendResult:
        """One exec per image: sequential per account, parallel across accounts; edits make one image."""
        return await generation.generate(self, request, reporter)

    async def describe(self, request: VisionRequest, reporter: JobReporter) -> str:
        """Codex's final message about the images, from `codex exec` in the read-only sandbox."""
        return await vision.describe(self, request, reporter)

    async def low_quota(self, tried: set[str]) -> set[str]:
        """Accounts whose known quota is below min_quota_percent, unless every candidate is (then none)."""
        now = utcnow()
        candidates = [a for a in self.pool.accounts if a.name not in tried and not a.resting(now)]
        quotas = await asyncio.gather(*(self.quota.read(a.home) for a in candidates))
        low = {
            a.name
            for a, q in zip(candidates, quotas, strict=True)
            if q.lowest is not None and q.lowest < self.options.min_quota_percent
        }
        return set() if len(low) == len(candidates) else low

    async def quotas(self) -> dict[str, Quota]:
        """Every account's quota (cached reads)."""
        found = await asyncio.gather(*(self.quota.read(a.home) for a in self.pool.accounts))
        return {a.name: q for a, q in zip(self.pool.accounts, found, strict=True)}

    async def run_on(
        self, account: Account, command: list[str], run_dir: Path, reporter: JobReporter, *, job_id: str | None = None
    ) -> process.Finished:
        """Run one codex command on a held account: its lock inherited, its group recorded, its token audited.

        The one way to run anything under an account's lock (`async with backend.pool.hold() as account`).
        """
        before = await asyncio.to_thread(tokens.fingerprint, account.home)
        try:
            finished = await process.run(
                command,
                cwd=run_dir,
                env=self.exec_env(account),
                timeout=self.options.timeout_seconds,
                kill_grace=self.options.kill_grace_seconds,
                max_output_bytes=self.options.max_output_bytes,
                lock_fd=account.lock_fd,
                record=account.run_record,
            )
        except asyncio.CancelledError:
            reporter.usage(account.name, "cancelled")
            await self._audit_token(account, before, "killed (cancelled)", reporter, job_id)
            raise
        except OSError as exc:
            reporter.usage(account.name, "failure")
            raise BackendError("The Codex executable could not be started; tell the operator.") from exc
        await self._audit_token(
            account, before, "killed (timeout)" if finished.timed_out else "rotated", reporter, job_id
        )
        if self.store is not None:
            await self.store.put(LAST_RUN_PREFIX + account.name, utcnow().isoformat())
        return finished

    async def _audit_token(
        self, account: Account, before: str | None, reason: str, reporter: JobReporter, job_id: str | None
    ) -> None:
        """Note the refresh token's fingerprint before and after, when it rotated or the run was killed."""
        after = await asyncio.to_thread(tokens.fingerprint, account.home)
        if after == before and not reason.startswith("killed"):
            return
        reporter.write(
            f"codex: token audit {account.name}: refresh token {before or '-'} -> {after or '-'} ({reason})\n"
        )
        if self.store is not None:
            data = {"before": before, "after": after, "reason": reason}
            await self.store.add_event(TOKEN_EVENT, subject=account.name, data=data, job_id=job_id)

    def exec_env(self, account: Account) -> dict[str, str]:
        """What codex exec sees: home, path, locale, proxies, its CODEX_HOME and the options' env; nothing else."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k in PASSED_ENV or k.startswith(PASSED_ENV_PREFIXES) or k.lower() in PROXY_ENV
        }
        return {**env, **self.options.env, "CODEX_HOME": str(account.home)}

    def command(self, request: BackendRequest, workdir: Path, inputs: list[Path]) -> list[str]:
        """The exec command line: every caller-supplied text after `--`, so nothing can pass for a flag."""
        return generation.command(self, request, workdir, inputs)

    async def sweep(self) -> int:
        """Remove Codex's caches of our sessions past cache_max_age_hours, workdirs and output hashes past retention."""
        removed = await asyncio.to_thread(
            workdirs.sweep,
            self.workdirs,
            [a.home for a in self.pool.accounts],
            now=time.time(),
            cache_age=self.options.cache_max_age_hours * 3600,
            keep_age=self.settings.retention_days * 86_400,
        )
        if self.store is not None:
            await self.store.prune(OUTPUT_EVENT, before=utcnow() - timedelta(days=self.settings.retention_days))
        return removed

    async def aclose(self) -> None:
        """Close the usage endpoint's client."""
        await self.quota.aclose()


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
