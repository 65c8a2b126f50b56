"""An S3-compatible server on a free loopback port (moto's server mode in a subprocess), and buckets in it."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx2

from tests.fakes.postgres import free_port

START_TIMEOUT_SECONDS = 120  # a deadline, not a measurement: moto imports a lot on a busy machine
# moto accepts any credentials; these only have to be present, so that nothing asks an instance-metadata service.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "imagegate-test", "AWS_SECRET_ACCESS_KEY": "imagegate-test-secret"}
REGION = "us-east-1"
_buckets = itertools.count()


class S3Server:
    """A running moto server: its endpoint, and a way to make buckets and look inside them."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def new_bucket(self) -> str:
        """Create an empty bucket with a fresh name; its name."""
        name = f"bucket-{next(_buckets)}"
        response = httpx2.put(f"{self.endpoint}/{name}")
        response.raise_for_status()
        return name

    def url(self, bucket: str, prefix: str = "") -> str:
        """An IMAGEGATE_STORAGE_URL for the bucket (and prefix) on this server."""
        return f"s3://{bucket}/{prefix}?endpoint={self.endpoint}&region={REGION}"

    def keys(self, bucket: str) -> list[str]:
        """Every key in the bucket, read with a plain ListObjectsV2 (not through ImageGate's code)."""
        response = httpx2.get(f"{self.endpoint}/{bucket}", params={"list-type": "2"})
        response.raise_for_status()
        text = response.text
        return [part.split("</Key>", 1)[0] for part in text.split("<Key>")[1:]]


@contextmanager
def s3_server(
    log_dir: Path, *, host: str = "127.0.0.1", port: int | None = None, prefix: Sequence[str] = ()
) -> Iterator[S3Server]:
    """Run `moto.server` on 127.0.0.1:<free port> (or host:port, started through prefix) until the block ends."""
    port = free_port() if port is None else port
    with open(log_dir / f"moto-{port}.log", "w") as sink:
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://{host}:{port}"
    try:
        _wait_until_answering(endpoint, process)
        yield S3Server(endpoint)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_until_answering(endpoint: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            httpx2.get(endpoint, timeout=5)
            return
        except httpx2.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the moto S3 server at {endpoint} did not start") from None
            time.sleep(0.1)
