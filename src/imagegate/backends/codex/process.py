"""Running one `codex exec`: no shell, its own process group, output to files, a sure stop, and no orphans.

The exec inherits the account's lock file descriptor, so the lock lives as long as the exec or anything it
started, even when the process that started it dies. Its process group is recorded in the account folder, so
whoever finds the account locked by a dead process's exec can end it (see end_orphan).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from imagegate.hosts import host_identity, same_host

RUN_RECORD = ".imagegate.run"
STDOUT, STDERR = "stdout.log", "stderr.log"


@dataclass(frozen=True)
class Finished:
    """How a run ended, with the head of what it printed (bounded)."""

    returncode: int | None  # None: stopped by us (timeout)
    stdout: str
    stderr: str
    timed_out: bool


def read_bounded(path: Path, max_bytes: int) -> str:
    """The first max_bytes of a file, and a note of what was not kept."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(max_bytes)
            rest = handle.seek(0, os.SEEK_END) - len(head)
    except FileNotFoundError:
        return ""
    text = head.decode("utf-8", "replace")
    return text + (f"\n[{rest} more bytes not kept]\n" if rest > 0 else "")


async def run(
    command: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    kill_grace: float,
    max_output_bytes: int,
    lock_fd: int | None = None,
    record: Path | None = None,
) -> Finished:
    """Run the command; on timeout or cancellation stop its whole process group (TERM, grace, KILL).

    stdout and stderr go to files in cwd (they outlive us if we die, and the sweep reads the session id there).
    """
    out, err = await asyncio.to_thread(_open_logs, cwd)
    with out, err:
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=cwd,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # its own process group, so its children stop with it
            pass_fds=(lock_fd,) if lock_fd is not None else (),
        )
    timed_out = False
    try:
        if record is not None:
            await asyncio.to_thread(write_record, record, process.pid)
        async with asyncio.timeout(timeout):
            await process.wait()
    except TimeoutError:
        timed_out = True
        await stop_group(process, kill_grace)
    except BaseException:
        await stop_group(process, kill_grace)
        raise
    finally:
        if record is not None and process.returncode is not None:
            await asyncio.to_thread(record.unlink, missing_ok=True)
    stdout, stderr = await asyncio.gather(
        asyncio.to_thread(read_bounded, cwd / STDOUT, max_output_bytes),
        asyncio.to_thread(read_bounded, cwd / STDERR, max_output_bytes),
    )
    return Finished(None if timed_out else process.returncode, stdout, stderr, timed_out)


def _open_logs(cwd: Path) -> tuple[BinaryIO, BinaryIO]:
    return open(cwd / STDOUT, "wb"), open(cwd / STDERR, "wb")  # closed once the exec has them


async def stop_group(process: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM to the process group, wait up to grace, then SIGKILL; never leaves it running."""
    _signal_group(process.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.shield(asyncio.wait_for(process.wait(), grace))
    # The leader may have exited while its children linger in the group: kill the group regardless.
    _signal_group(process.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.shield(asyncio.wait_for(process.wait(), grace))


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def write_record(path: Path, pid: int) -> None:
    """Note who runs the exec (its group, its start time) and on whose behalf (this process)."""
    record = {"pgid": pid, "started": _start_time(pid), "owner": os.getpid(), "host": host_identity()}
    path.write_text(json.dumps(record))


def end_orphan(path: Path, grace: float) -> bool:
    """End the exec group a dead process left running on this account; True when one was ended.

    Only a group whose starter is gone, on this host, whose members started no earlier than the recorded
    leader (so a reused process id is never signalled). File and process work: call it in a thread.
    """
    try:
        record = json.loads(path.read_text())
        pgid, started, owner, host = int(record["pgid"]), int(record["started"]), int(record["owner"]), record["host"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not same_host(host) or _alive(owner) or not group_members(pgid, started):
        return False
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while group_members(pgid, started) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)
    return True


def group_members(pgid: int, started: int) -> list[int]:
    """Live processes in the group that started no earlier than its recorded leader."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[0] != "Z" and int(fields[2]) == pgid and int(fields[19]) >= started:
            members.append(int(entry.name))
    return members


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat from the state on (state, ppid, pgrp, …, starttime at 19)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _start_time(pid: int) -> int:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else 0


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] != "Z"


def running(path: Path) -> bool:
    """True while the exec a record names still runs (on this host)."""
    try:
        record = json.loads(path.read_text())
        return same_host(record["host"]) and bool(group_members(int(record["pgid"]), int(record["started"])))
    except (OSError, ValueError, KeyError, TypeError):
        return False
