"""The S3 server the storage tests share (moto on loopback), and a store of each kind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imagegate.storage import Storage, storage_at
from imagegate.storage.location import LocalLocation, parse_storage_url
from tests.fakes.s3 import CREDENTIALS, S3Server, s3_server


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto S3 server for the whole run."""
    with s3_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The AWS variables an S3 store reads, set for this test only."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def bucket(s3: S3Server) -> str:
    """A fresh empty bucket."""
    return s3.new_bucket()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """A store of each kind: a local folder, and a prefix in a fresh S3 bucket."""
    if request.param == "local":
        return storage_at(LocalLocation(tmp_path / "files"))
    request.getfixturevalue("s3_credentials")
    server: S3Server = request.getfixturevalue("s3")
    location = parse_storage_url(server.url(server.new_bucket(), "some/prefix"))
    assert location is not None
    return storage_at(location)
