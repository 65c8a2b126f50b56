"""A throwaway PostgreSQL server for the test run: initdb into a temp dir, start, stop."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import asyncpg

START_TIMEOUT_SECONDS = 60
# Clusters live in memory where the system has a tmpfs there: a test database is a file copy of the template,
# ~4x faster there than on a disk other processes keep busy; the tests drop each database when they end.
MEMORY_DIR = Path("/dev/shm")


def find_bindir() -> Path | None:
    """The folder with initdb and pg_ctl, or None when PostgreSQL is not installed."""
    override = os.environ.get("IMAGEGATE_TEST_PG_BINDIR")
    if override:
        return Path(override)
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_postgres_user(command: list[str]) -> list[str]:
    # initdb refuses to run as root; the test run then uses the postgres system user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


class PostgresServer:
    """A throwaway server on 127.0.0.1:<free port> (user postgres, trust auth) that a test may stop and start.

    host, port and prefix put it elsewhere: prefix runs its commands there (e.g. `ip netns exec NAME`)."""

    def __init__(
        self,
        bindir: Path,
        *,
        durable: bool = False,
        host: str = "127.0.0.1",
        port: int | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        self.bindir = bindir
        # Without it a crash (an immediate stop) may lose the last commits, as synchronous_commit=off allows.
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="imagegate-pg-", dir=_cluster_parent()))
        self.data = self.root / "data"
        self.host = host
        self.port = free_port() if port is None else port
        self.prefix = list(prefix)
        self.url = f"postgresql+asyncpg://postgres@{host}:{self.port}"

    def init(self) -> None:
        """Create the cluster's files."""
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        command = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"]
        subprocess.run(_as_postgres_user([*command, "-E", "UTF8", "--no-sync"]), check=True, capture_output=True)
        if self.host != "127.0.0.1":  # initdb trusts loopback only; let in the hosts on the server's own networks
            with open(self.data / "pg_hba.conf", "a") as rules:
                rules.write("host all all samenet trust\n")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        commit = "on" if self.durable else "off"
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses={self.host} -c fsync=off "
            f"-c synchronous_commit={commit} -c full_page_writes=off -c max_connections=300"
        )
        command = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log")]
        subprocess.run(
            [*self.prefix, *_as_postgres_user([*command, "-w", "-t", str(START_TIMEOUT_SECONDS), "start"])],
            check=True,
            capture_output=True,
        )
        _wait_for_port(self.host, self.port)

    def stop(self) -> None:
        """Stop at once, dropping every connection (an outage, as a crash or a network cut would be)."""
        subprocess.run(
            _as_postgres_user([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
            check=False,
            capture_output=True,
        )

    def remove(self) -> None:
        """Stop and delete the cluster."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def create_database(base_url: str, name: str) -> str:
    """Create an empty database on the server; its URL."""

    async def create() -> None:
        connection = await asyncpg.connect(base_url.replace("postgresql+asyncpg", "postgresql") + "/postgres")
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    asyncio.run(create())
    return f"{base_url}/{name}"


@contextmanager
def controlled_postgres(
    *, durable: bool = False, host: str = "127.0.0.1", port: int | None = None, prefix: Sequence[str] = ()
) -> Iterator[PostgresServer]:
    """A running server the test controls; removed afterwards. durable: commits survive its being killed."""
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL binaries not found: install the postgresql package")
    server = PostgresServer(bindir, durable=durable, host=host, port=port, prefix=prefix)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()


@contextmanager
def postgres_server() -> Iterator[str]:
    """Run a server on 127.0.0.1:<free port> and yield its base URL (user postgres, trust auth)."""
    with controlled_postgres() as server:
        yield server.url


def _cluster_parent() -> Path | None:
    return MEMORY_DIR if MEMORY_DIR.is_dir() and os.access(MEMORY_DIR, os.W_OK) else None


def _wait_for_port(host: str, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
