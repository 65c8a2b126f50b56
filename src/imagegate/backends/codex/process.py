"""Running one `codex exec`: no shell, its own process group, bounded output, and a sure stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Finished:
    """How a run ended, with the head of what it printed (bounded)."""

    returncode: int | None  # None: stopped by us (timeout)
    stdout: str
    stderr: str
    timed_out: bool


class BoundedText:
    """Keeps the first max_bytes of a stream and counts the rest."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._chunks: list[bytes] = []
        self._kept = 0
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        """Keep what fits."""
        room = self.max_bytes - self._kept
        if room > 0:
            self._chunks.append(chunk[:room])
            self._kept += min(room, len(chunk))
        self.dropped += max(len(chunk) - max(room, 0), 0)

    def text(self) -> str:
        """What was kept, and a note of what was not."""
        text = b"".join(self._chunks).decode("utf-8", "replace")
        return text + (f"\n[{self.dropped} more bytes not kept]\n" if self.dropped else "")


async def run(
    command: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    kill_grace: float,
    max_output_bytes: int,
) -> Finished:
    """Run the command; on timeout or cancellation stop its whole process group (TERM, grace, KILL)."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group, so its children stop with it
    )
    stdout, stderr = BoundedText(max_output_bytes), BoundedText(max_output_bytes)
    assert process.stdout is not None
    assert process.stderr is not None
    readers = asyncio.gather(_drain(process.stdout, stdout), _drain(process.stderr, stderr))
    timed_out = False
    try:
        async with asyncio.timeout(timeout):
            await process.wait()
            await readers
    except TimeoutError:
        timed_out = True
        await stop_group(process, kill_grace)
    except BaseException:
        await stop_group(process, kill_grace)
        raise
    finally:
        readers.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await readers
    return Finished(None if timed_out else process.returncode, stdout.text(), stderr.text(), timed_out)


async def _drain(stream: asyncio.StreamReader, sink: BoundedText) -> None:
    while chunk := await stream.read(READ_CHUNK):
        sink.add(chunk)


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
