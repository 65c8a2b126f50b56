"""Job workdirs: inputs, one folder per attempt, the sessions our runs had, and sweeping them with Codex's caches.

All of it is file work: call these functions in a thread.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from imagegate.backends.base import BackendRequest
from imagegate.backends.codex import outputs, process

SESSION_FILE = "sessions.txt"
CLEANED_MARK = ".caches-removed"


def write_inputs(workdir: Path, request: BackendRequest) -> list[Path]:
    """Write the reference images into the workdir; their paths, for --image."""
    workdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, reference in enumerate(request.references):
        path = workdir / f"input-{index + 1}.{reference.format}"
        path.write_bytes(reference.data)
        paths.append(path)
    return paths


def fresh_run_dir(workdir: Path, index: int) -> Path:
    """A folder of its own for each attempt (a retry never overwrites the output of the one before)."""
    attempt = 1
    while (workdir / f"run-{index}-{attempt}").exists():
        attempt += 1
    path = workdir / f"run-{index}-{attempt}"
    path.mkdir(parents=True)
    return path


def sessions_of(workdir: Path) -> list[str]:
    """Sessions our runs had: the ones noted, and any in a run's stderr (a run whose server died notes none)."""
    sessions_file = workdir / SESSION_FILE
    found = sessions_file.read_text().split() if sessions_file.exists() else []
    for stderr in workdir.glob(f"run-*/{process.STDERR}"):
        session = outputs.session_id(process.read_bounded(stderr, 64 * 1024))
        if session and session not in found:
            found.append(session)
    return found


def remember_session(workdir: Path, session: str) -> None:
    """Note a run's session id, so the sweep finds its caches."""
    with open(workdir / SESSION_FILE, "a", encoding="utf-8") as handle:
        handle.write(session + "\n")


def sweep(workdirs: Path, homes: Iterable[Path], *, now: float, cache_age: float, keep_age: float) -> int:
    """Remove our sessions' caches from the accounts past cache_age (seconds), and workdirs past keep_age."""
    removed = 0
    if not workdirs.is_dir():
        return 0
    homes = list(homes)
    for workdir in workdirs.iterdir():
        age = now - workdir.stat().st_mtime
        if age > min(cache_age, keep_age) and not (workdir / CLEANED_MARK).exists():
            removed += remove_caches(workdir, homes)
            (workdir / CLEANED_MARK).touch()
        if age > keep_age:
            shutil.rmtree(workdir, ignore_errors=True)
            removed += 1
    return removed


def remove_caches(workdir: Path, homes: list[Path]) -> int:
    """Remove the rollouts and generated_images folders of this workdir's sessions from every account."""
    removed = 0
    sessions = sessions_of(workdir)
    for home in homes:
        for session in sessions:
            for rollout in (home / "sessions").glob(f"*/*/*/rollout-*{session}.jsonl"):
                rollout.unlink(missing_ok=True)
                removed += 1
            images = home / "generated_images" / session
            if images.is_dir():
                shutil.rmtree(images, ignore_errors=True)
                removed += 1
    return removed
