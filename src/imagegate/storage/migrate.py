"""Copy every object of one store to another (local disk to S3): idempotent, and a rerun resumes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from imagegate.errors import ImagegateError
from imagegate.storage.base import Storage, StoredObject
from imagegate.storage.local import TMP_SUFFIX

COPIES_AT_ONCE = 8
# What is not data: readiness probes, and a local write's temporary file that a crash left behind.
SKIPPED_PREFIXES = ("health/",)


@dataclass
class MigrationReport:
    """What one run copied, found already there, and could not copy."""

    copied: int = 0
    copied_bytes: int = 0
    present: int = 0
    vanished: int = 0  # listed, then deleted (by retention) before it was copied
    failed: list[str] = field(default_factory=list)


async def migrate(source: Storage, target: Storage, *, at_once: int = COPIES_AT_ONCE) -> MigrationReport:
    """Copy each object of source that target lacks (or holds with another size); nothing is deleted."""
    report = MigrationReport()
    there = {obj.key: obj.size async for obj in target.list("")}
    slots = asyncio.Semaphore(at_once)
    async with asyncio.TaskGroup() as copies:
        async for obj in source.list(""):
            if not _is_data(obj.key):
                continue
            if there.get(obj.key) == obj.size:
                report.present += 1
                continue
            await slots.acquire()
            copies.create_task(_copy(source, target, obj, report, slots))
    return report


def _is_data(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return not key.startswith(SKIPPED_PREFIXES) and not (name.startswith(".") and name.endswith(TMP_SUFFIX))


async def _copy(
    source: Storage, target: Storage, obj: StoredObject, report: MigrationReport, slots: asyncio.Semaphore
) -> None:
    """One object, streamed from its file when it has one; a failure is noted and the others go on."""
    try:
        path = source.local_path(obj.key)
        if path is None:
            await target.put(obj.key, await source.get(obj.key))
        else:
            handle = await asyncio.to_thread(open, path, "rb")
            try:
                await target.put(obj.key, handle)
            finally:
                await asyncio.to_thread(handle.close)
        report.copied += 1
        report.copied_bytes += obj.size
    except FileNotFoundError:
        report.vanished += 1
    except (OSError, ImagegateError) as error:
        report.failed.append(f"{obj.key}: {getattr(error, 'message', None) or error}")
    finally:
        slots.release()
