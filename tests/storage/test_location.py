"""IMAGEGATE_STORAGE_URL: what each form means, and a message naming the setting for each malformed one."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagegate.settings import Settings
from imagegate.storage.location import LocalLocation, S3Location, parse_storage_url


def test_the_forms_and_what_they_mean() -> None:
    assert parse_storage_url("") is None
    assert parse_storage_url("file:///var/lib/imagegate/files") == LocalLocation(Path("/var/lib/imagegate/files"))
    assert parse_storage_url("s3://images") == S3Location(bucket="images")
    full = parse_storage_url("s3://my.images/a/b/?endpoint=https://minio.internal:9000/&region=eu-west-1")
    assert full == S3Location(
        bucket="my.images", prefix="a/b", endpoint="https://minio.internal:9000", region="eu-west-1"
    )
    assert isinstance(full, S3Location)
    assert full.url() == "s3://my.images/a/b?endpoint=https://minio.internal:9000&region=eu-west-1"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://host/x", "must be file:///absolute/path or s3://bucket/prefix"),
        ("/var/lib/files", "must be file:///absolute/path or s3://bucket/prefix"),
        ("file://host/x", "absolute path with no host"),
        ("file:///x?y=1", "take no ?options"),
        ("s3://", "names no valid bucket"),
        ("s3://Images", "names no valid bucket"),
        ("s3://images:9000", "names no valid bucket"),
        ("s3://key:secret@images", "must not hold credentials"),
        ("s3://images/a/../b", "invalid prefix"),
        ("s3://images/a//b", "invalid prefix"),
        ("s3://images?colour=blue", "unknown option 'colour'"),
        ("s3://images?region=", "exactly one non-empty region="),
        ("s3://images?region=a&region=b", "exactly one non-empty region="),
        ("s3://images?region=eu west", "invalid region"),
        ("s3://images?endpoint=minio:9000", "not an http(s) URL"),
        ("s3://images?endpoint=http://minio:99999", "not an http(s) URL"),
        ("s3://images?endpoint=http://u:p@minio:9000", "credentials, a query or a fragment"),
    ],
)
def test_a_malformed_url_stops_the_start_naming_the_setting(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match="IMAGEGATE_STORAGE_URL") as raised:
        Settings(storage_url=url)
    assert problem in str(raised.value)


def test_presigning_needs_an_s3_store() -> None:
    with pytest.raises(ValueError, match="IMAGEGATE_STORAGE_PRESIGN needs an s3://"):
        Settings(storage_presign=True)
    assert Settings(storage_url="s3://images", storage_presign=True).storage_presign
