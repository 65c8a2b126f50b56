"""IMAGEGATE_STORAGE_URL: file:///path or s3://bucket/prefix?endpoint=…&region=…, checked at startup."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from imagegate.storage.base import check_key

SETTING = "IMAGEGATE_STORAGE_URL"
S3_OPTIONS = ("endpoint", "region")
# S3's bucket naming rules (MinIO and R2 follow them too): 3 to 63 lowercase letters, digits, dots and hyphens.
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
REGION_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")


@dataclass(frozen=True)
class LocalLocation:
    """Files in a folder on this machine."""

    root: Path


@dataclass(frozen=True)
class S3Location:
    """Objects in an S3-compatible bucket, under a prefix ('' for the bucket's root)."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None

    def url(self) -> str:
        """The location as an s3:// URL (it never holds credentials)."""
        base = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        options = [f"{name}={value}" for name, value in (("endpoint", self.endpoint), ("region", self.region)) if value]
        return base + ("?" + "&".join(options) if options else "")


Location = LocalLocation | S3Location


class StorageUrlError(ValueError):
    """IMAGEGATE_STORAGE_URL is malformed; the message names the setting and what to fix."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"{SETTING} {problem}")


def parse_storage_url(value: str) -> Location | None:
    """The location a storage URL names; None for '' (the data folder's files); StorageUrlError when malformed."""
    value = value.strip()
    if not value:
        return None
    scheme, _, rest = value.partition("://")
    if scheme == "file":
        return _local(rest)
    if scheme == "s3":
        return _s3(value)
    raise StorageUrlError(f"must be file:///absolute/path or s3://bucket/prefix, not {value!r}")


def _local(rest: str) -> LocalLocation:
    if not rest.startswith("/"):
        raise StorageUrlError("file:// URLs name an absolute path with no host: file:///var/lib/imagegate/files")
    if "?" in rest or "#" in rest:
        raise StorageUrlError("file:// URLs take no ?options or #fragment")
    return LocalLocation(Path(unquote(rest)))


def _s3(value: str) -> S3Location:
    parts = urlsplit(value)
    if parts.username is not None or parts.password is not None:
        raise StorageUrlError("must not hold credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead")
    if parts.fragment:
        raise StorageUrlError("takes no #fragment")
    bucket = parts.netloc
    if not BUCKET_NAME.match(bucket) or ".." in bucket:
        raise StorageUrlError(f"names no valid bucket (3-63 of a-z 0-9 . -): s3://BUCKET/prefix, not {bucket!r}")
    prefix = unquote(parts.path).strip("/")
    if prefix:
        try:
            check_key(prefix)
        except ValueError:
            raise StorageUrlError(f"has an invalid prefix {prefix!r} (no empty, '.' or '..' parts)") from None
    options = _options(parts.query)
    endpoint = options.get("endpoint")
    if endpoint is not None:
        _check_endpoint(endpoint)
    region = options.get("region")
    if region is not None and not REGION_NAME.match(region):
        raise StorageUrlError(f"has an invalid region {region!r}")
    return S3Location(bucket=bucket, prefix=prefix, endpoint=endpoint and endpoint.rstrip("/"), region=region)


def _options(query: str) -> dict[str, str]:
    try:
        parsed = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise StorageUrlError(f"has a malformed query {query!r}: use ?endpoint=…&region=…") from None
    for name, values in parsed.items():
        if name not in S3_OPTIONS:
            raise StorageUrlError(f"has an unknown option {name!r}; the options are {', '.join(S3_OPTIONS)}")
        if len(values) != 1 or not values[0].strip():
            raise StorageUrlError(f"needs exactly one non-empty {name}=")
    return {name: values[0].strip() for name, values in parsed.items()}


def _check_endpoint(endpoint: str) -> None:
    parts = urlsplit(endpoint)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise StorageUrlError(f"has an endpoint that is not an http(s) URL: {endpoint!r}")
    if parts.username is not None or parts.query or parts.fragment:
        raise StorageUrlError("has an endpoint with credentials, a query or a fragment; give only scheme://host:port")
