"""Metrics never take the service down: their files stay off the data volume and a failed write is a lost sample."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from imagegate.cli.common import MULTIPROC_ENV, prepare_metrics
from imagegate.metrics import RESERVE_BYTES, ReservedMmapedDict
from imagegate.settings import Settings
from tests.helpers import Harness

KEYS = 20_000  # enough entries to grow a metrics file past its first mapping


def test_metric_files_default_off_the_data_volume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, "")
    monkeypatch.delenv(MULTIPROC_ENV)
    data = tmp_path / "data"
    prepare_metrics(Settings(data_dir=data))
    folder = Path(os.environ[MULTIPROC_ENV])
    try:
        assert folder.is_dir()
        assert not folder.is_relative_to(data.resolve())
        monkeypatch.delenv(MULTIPROC_ENV)
        prepare_metrics(Settings(data_dir=data))
        assert Path(os.environ[MULTIPROC_ENV]) == folder  # processes sharing a data folder share their metrics
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    monkeypatch.delenv(MULTIPROC_ENV)
    prepare_metrics(Settings(data_dir=data, metrics_dir=tmp_path / "tmpfs" / "metrics"))
    assert Path(os.environ[MULTIPROC_ENV]) == (tmp_path / "tmpfs" / "metrics").resolve()


def _allocated_bytes(path: Path) -> int:
    return path.stat().st_blocks * 512


def test_metric_files_are_allocated_before_writes_reach_them(tmp_path: Path) -> None:
    # A mapped page the filesystem has not allocated is a SIGBUS when the disk is full; allocated, it cannot be.
    path = tmp_path / "counter_1.db"
    values = ReservedMmapedDict(str(path))
    try:
        assert _allocated_bytes(path) >= RESERVE_BYTES  # ahead of the first write, not page by page as it lands
        for index in range(KEYS):
            values.write_value(f"imagegate_http_requests_total{{route=/r/{index:08d}}}", 1.0, 0.0)  # type: ignore[no-untyped-call]
            assert values.reserved >= values._used
        assert values._used > 1024 * 1024  # grown well past the first mapping
        assert _allocated_bytes(path) >= values._used
    finally:
        values.close()  # type: ignore[no-untyped-call]


class FullDiskMetric:
    """A metric whose every write fails as one on a full disk does."""

    def labels(self, *values: str) -> object:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


async def test_a_metric_that_cannot_be_written_loses_the_sample_not_the_request(harness: Harness) -> None:
    metrics = harness.app.state.services.metrics
    for guarded in (metrics.http, metrics.http_duration, metrics.jobs, metrics.duration, metrics.queue_wait):
        guarded.metric = FullDiskMetric()
    response = await harness.client.post("/v1/images/generate", json={"prompt": "x"}, headers=await harness.auth())
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    assert (await harness.client.get("/metrics")).status_code == 200
