"""The run record of a `codex exec` group: an orphan is ended only by a process on the machine that started it."""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagegate import hosts
from imagegate.backends.codex.process import end_orphan, group_members, write_record
from tests.helpers import dead_pid


@pytest.fixture
def orphan() -> Iterator[subprocess.Popen[bytes]]:
    """A process group of its own, as `codex exec` runs, whose starter is gone."""
    process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield process
    process.kill()
    process.wait()


def _record_of_dead_starter(path: Path, process: subprocess.Popen[bytes]) -> None:
    write_record(path, process.pid)
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "owner": dead_pid()}))


def test_an_orphan_recorded_on_this_machine_is_ended(tmp_path: Path, orphan: subprocess.Popen[bytes]) -> None:
    record = tmp_path / "run.json"
    _record_of_dead_starter(record, orphan)
    assert end_orphan(record, grace=5)
    assert orphan.wait(timeout=10) != 0


def test_a_clone_with_the_same_hostname_never_signals_this_machines_processes(
    tmp_path: Path, orphan: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A shared account folder, written by a machine with this hostname but another kernel: its pids mean nothing here.
    other_boot = tmp_path / "boot_id"
    other_boot.write_text(f"{uuid.uuid4()}\n")
    record = tmp_path / "run.json"
    with monkeypatch.context() as other_machine:
        other_machine.setattr(hosts, "BOOT_ID", other_boot)
        _record_of_dead_starter(record, orphan)  # as the clone writes it
    assert not end_orphan(record, grace=5)
    assert group_members(orphan.pid, 0) == [orphan.pid]
    assert orphan.poll() is None


def test_a_bare_hostname_from_an_older_release_still_names_this_host() -> None:
    assert hosts.same_host(hosts.host_identity())
    assert hosts.same_host(socket.gethostname())
    assert not hosts.same_host(f"{socket.gethostname()}#another-boot#1")
