"""ImageGate on several hosts: PostgreSQL and an S3 server on the hub, API and worker hosts run with the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from tests.fakes.backends import runs_of
from tests.fakes.netns import Host, Network, kill, network
from tests.fakes.postgres import PostgresServer, create_database, find_bindir
from tests.fakes.s3 import CREDENTIALS, S3Server, s3_server
from tests.fakes.server import REPO, base_env, loopback_client

API_HOSTS = 2
WORKER_HOSTS = 4
SLOTS = 2  # IMAGEGATE_WORKER_SLOTS of each worker host; the backend's limit is all of them together
LEASE_SECONDS = 6.0  # small, so that a dead host's job is settled within the test; a live worker renews 6 times
HEARTBEAT_SECONDS = 1.0
START_TIMEOUT_SECONDS = 180  # a deadline, not a measurement: eight processes import at once on a busy machine
WAIT_SECONDS = 120  # a deadline for jobs to end, not a measurement
WORKER_READY = "ImageGate worker running"
AWS_VARIABLES_IGNORED = ("AWS_SESSION_TOKEN", "AWS_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_PROFILE")


@dataclass
class Gate:
    """An ImageGate process on a host: `serve` (an API host, no workers) or `worker`."""

    host: Host
    command: list[str]
    env: dict[str, str]
    log: Path
    url: str | None = None  # an API host's base URL
    process: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        """The host's own data folder."""
        return Path(self.env["IMAGEGATE_DATA_DIR"])

    def output(self) -> str:
        """What the process printed so far."""
        return self.log.read_text(errors="replace")


@dataclass
class Cluster:
    """The hosts, the shared database and bucket, and what the backends recorded."""

    network: Network
    work: Path
    s3: S3Server
    bucket: str
    apis: list[Gate] = field(default_factory=list)
    workers: list[Gate] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def start(self, gate: Gate) -> None:
        """Start the process on its host (not waiting for it)."""
        gate.process = gate.host.start(gate.command, env=gate.env, cwd=self.work, log=gate.log)

    def wait_ready(self, gate: Gate) -> None:
        """Wait until an API host answers /health, or a worker host says its workers run."""
        if gate.url is not None:
            with loopback_client(timeout=2) as client:
                poll(lambda: _healthy(client, gate), f"{gate.host.name} to answer", gate, START_TIMEOUT_SECONDS)
        else:
            poll(lambda: WORKER_READY in gate.output(), f"{gate.host.name} to run", gate, START_TIMEOUT_SECONDS)

    def kill(self, gate: Gate) -> None:
        """SIGKILL the host's processes: it dies mid-work."""
        assert gate.process is not None
        kill(gate.process)

    def runs(self) -> dict[str, list[str]]:
        """Each job's runs so far, as the hosts that ran them."""
        return runs_of(self.runs_folder)

    @property
    def runs_folder(self) -> Path:
        """Where every host's backend records its runs (a folder all hosts see; only the test reads it)."""
        return self.work / "runs"


@contextmanager
def cluster(work: Path) -> Iterator[Cluster]:
    """PostgreSQL and S3 on the hub, API_HOSTS API hosts and WORKER_HOSTS worker hosts, all running; then gone."""
    with ExitStack() as stack:
        net = stack.enter_context(network())
        with net.inside():
            database_url, s3 = _services(net, work, stack)
            running = Cluster(net, work, s3, s3.new_bucket())
            running.runs_folder.mkdir()
            env = _env(running, database_url)
            for number in range(1, API_HOSTS + 1):
                running.apis.append(_api(net.host(f"api-{number}", 10 + number), env, work))
            for number in range(1, WORKER_HOSTS + 1):
                running.workers.append(_worker(net.host(f"worker-{number}", 20 + number), env, work))
            gates = [*running.apis, *running.workers]
            stack.callback(_kill_all, gates)
            for gate in gates:
                running.start(gate)
            running.headers = _key(running.apis[0], work)
            for gate in gates:
                running.wait_ready(gate)
        yield running


def _services(net: Network, work: Path, stack: ExitStack) -> tuple[str, S3Server]:
    """PostgreSQL and the S3 server started on the hub together; the database's URL and the S3 server."""
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL binaries not found: install the postgresql package")
    hub = net.hub
    postgres = PostgresServer(bindir, host=hub.address, port=hub.port(5432), prefix=hub.prefix)
    stack.callback(postgres.remove)
    with ThreadPoolExecutor(1) as pool:  # its thread opens its sockets on the hub too
        started = pool.submit(_init_and_start, postgres)
        s3 = stack.enter_context(s3_server(work, host=hub.address, port=hub.port(9000), prefix=hub.prefix))
        started.result()
    return create_database(postgres.url, "imagegate"), s3


def _init_and_start(postgres: PostgresServer) -> None:
    postgres.init()
    postgres.start()


def _kill_all(gates: list[Gate]) -> None:
    for gate in gates:
        if gate.process is not None:
            kill(gate.process)


def _env(running: Cluster, database_url: str) -> dict[str, str]:
    """What every host shares: the database, the bucket, the backend (with SLOTS per worker), short leases."""
    env = {k: v for k, v in base_env(**CREDENTIALS).items() if k not in AWS_VARIABLES_IGNORED}
    backend = {"type": "tests.fakes.backends:RecordingBackend", "concurrency": SLOTS * WORKER_HOSTS}
    env.update(
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
        IMAGEGATE_DATABASE_URL=database_url,
        IMAGEGATE_STORAGE_URL=running.s3.url(running.bucket, "shared"),
        IMAGEGATE_ADMIN_PASSWORD="x" * 16,
        IMAGEGATE_BACKENDS=json.dumps({"fake": {**backend, "options": {"runs": str(running.runs_folder)}}}),
        IMAGEGATE_MODELS=json.dumps({"fake": "fake"}),
        IMAGEGATE_DEFAULT_MODEL="fake",
        IMAGEGATE_WORKER_SLOTS=str(SLOTS),
        IMAGEGATE_WORKER_LEASE_SECONDS=str(LEASE_SECONDS),
        IMAGEGATE_WORKER_HEARTBEAT_SECONDS=str(HEARTBEAT_SECONDS),
    )
    return env


def _on(host: Host, env: dict[str, str], work: Path, **extra: str) -> dict[str, str]:
    """A host's own environment: its own data folder (no disk is shared) and its name in the backend's records."""
    backends = json.loads(env["IMAGEGATE_BACKENDS"])
    backends["fake"]["options"]["host"] = host.name
    data = work / host.name / "data"
    return {**env, "IMAGEGATE_BACKENDS": json.dumps(backends), "IMAGEGATE_DATA_DIR": str(data), **extra}


def _api(host: Host, env: dict[str, str], work: Path) -> Gate:
    port = host.port(8000)
    command = [sys.executable, "-m", "imagegate.cli", "serve", "--host", host.address, "--port", str(port)]
    own = _on(host, env, work, IMAGEGATE_RUN_SCHEDULER="false")
    return Gate(host, command, own, work / f"{host.name}.log", url=f"http://{host.address}:{port}")


def _worker(host: Host, env: dict[str, str], work: Path) -> Gate:
    command = [sys.executable, "-m", "imagegate.cli", "worker"]
    return Gate(host, command, _on(host, env, work), work / f"{host.name}.log")


def _key(api: Gate, work: Path) -> dict[str, str]:
    """A new API key, made with the CLI on the API host (it migrates the database first, as the hosts do)."""
    created = subprocess.run(
        [*api.host.prefix, sys.executable, "-m", "imagegate.cli", "keys", "create", "hosts"],
        env=api.env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_SECONDS,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    return {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}


def poll(check: Callable[[], Any], what: str, gate: Gate | None = None, timeout: float = WAIT_SECONDS) -> Any:
    """check()'s first true value, polled until a deadline; fails at once if the gate's process has exited."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if gate is not None and gate.process is not None and gate.process.poll() is not None:
            raise AssertionError(f"{gate.host.name} exited while waiting for {what}:\n{gate.output()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _healthy(client: httpx2.Client, gate: Gate) -> bool:
    try:
        return client.get(f"{gate.url}/health").status_code == 200
    except httpx2.HTTPError:
        return False
