"""The listening record: what a server writes once bound, and when the CLI may believe it."""

from __future__ import annotations

import json
from pathlib import Path

from imagegate import listening
from imagegate.hosts import host_identity
from imagegate.settings import Settings
from tests.helpers import dead_pid, make_settings


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return make_settings("sqlite+aiosqlite://", tmp_path, **overrides)


def test_a_live_record_names_the_bound_port_under_the_root_path(tmp_path: Path) -> None:
    settings = _settings(tmp_path, root_path="/gate")
    listening.write_record(settings, "0.0.0.0", 9999)  # noqa: S104 (written, never bound)
    assert listening.recorded_url(settings) == "http://127.0.0.1:9999/gate"
    listening.remove_record(settings)
    assert not listening.record_path(settings).exists()
    assert listening.recorded_url(settings) is None


def test_a_record_of_a_gone_process_or_another_machine_is_ignored(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    path = listening.record_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    for record in (
        {"pid": dead_pid(), "host": host_identity(), "url": "http://127.0.0.1:9999"},
        {"pid": 1, "host": "elsewhere#boot#1", "url": "http://127.0.0.1:9999"},
    ):
        path.write_text(json.dumps(record))
        assert listening.recorded_url(settings) is None, record
    path.write_text("{not json")
    assert listening.recorded_url(settings) is None


def test_another_server_s_record_is_left_at_a_clean_stop(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    path = listening.record_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": 1, "host": host_identity(), "url": "http://127.0.0.1:9999"}))
    listening.remove_record(settings)
    assert path.exists()


def test_ipv6_addresses_are_bracketed() -> None:
    assert listening.listen_url("::", 8000) == "http://[::1]:8000"
    assert listening.listen_url("fd00::5", 8000, "/x/") == "http://[fd00::5]:8000/x"
