"""Hosts for tests on several hosts: a network namespace per host, or the same topology on loopback ports.

In namespace mode a hub namespace holds a bridge with HUB_ADDRESS; each host is a namespace of its own (with `lo`
up and its own hostname) joined to the bridge by a veth pair, with an address in SUBNET. The addresses exist only
inside this run's namespaces, so nothing reaches outside and two runs never collide; the namespaces' names are
unique per run. Where namespaces cannot be made (no privilege), every host is 127.0.0.1 with ports of its own
and no command prefix: the code path is the same, only the addresses, ports and prefix differ.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from tests.fakes.postgres import free_port

SUBNET = "10.77.0"  # private, and inside the run's own namespaces only
HUB_ADDRESS = f"{SUBNET}.1"
NETNS_DIR = Path("/var/run/netns")
CLONE_NEWNET = 0x40000000
FORCE_LOOPBACK = "IMAGEGATE_TEST_NETWORK"  # =loopback runs the loopback topology where namespaces would work
KILL_WAIT_SECONDS = 30  # a deadline for a killed process to be reaped, not a measurement


@dataclass(frozen=True)
class Host:
    """One host: its name, its address, and the prefix that runs a command on it."""

    name: str
    address: str
    prefix: tuple[str, ...]
    namespaced: bool

    def port(self, usual: int) -> int:
        """A port to listen on: the usual one on a host of its own, a free one when hosts share loopback."""
        return usual if self.namespaced else free_port()

    def start(self, command: Sequence[str], *, env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
        """Run a command on this host, in a process group of its own (so that killing the host kills all of it)."""
        with open(log, "wb") as sink:
            return subprocess.Popen(
                [*self.prefix, *command],
                env=env,
                cwd=cwd,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a host's process group at once: the host dies mid-work, as in a power loss."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=KILL_WAIT_SECONDS)


@cache
def namespaces_unavailable() -> str | None:
    """Why network namespaces cannot be made here (tried once per run), or None when they can."""
    if os.environ.get(FORCE_LOOPBACK) == "loopback":
        return f"{FORCE_LOOPBACK}=loopback"
    missing = [tool for tool in ("ip", "unshare") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not installed"
    probe = f"igprobe-{os.getpid()}-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        return made.stderr.strip() or f"ip netns add exited with {made.returncode}"
    try:  # a bridge and a veth pair as well: some containers allow namespaces but not these
        for link in (["br0", "type", "bridge"], ["v0", "type", "veth", "peer", "name", "v1"]):
            linked = subprocess.run(["ip", "-n", probe, "link", "add", *link], capture_output=True, text=True)
            if linked.returncode != 0:
                return linked.stderr.strip() or f"ip link add {link[2]} exited with {linked.returncode}"
    finally:
        subprocess.run(["ip", "netns", "delete", probe], capture_output=True, check=False)
    try:
        _libc().setns  # noqa: B018 - present on Linux; inside() needs it
    except AttributeError:
        return "the C library has no setns"
    return None


@dataclass
class Network:
    """The hosts of one test module and, in namespace mode, the namespaces behind them."""

    namespaced: bool
    run: str = field(default_factory=lambda: f"ig{os.getpid()}{secrets.token_hex(2)}")
    namespaces: list[str] = field(default_factory=list)
    hub: Host = field(init=False)

    def make_hub(self) -> None:
        """The hub host: in namespace mode a namespace with the bridge every other host joins."""
        if self.namespaced:
            hub = self._namespace("hub")
            _ip("-n", hub, "link", "add", "br0", "type", "bridge")
            _ip("-n", hub, "addr", "add", f"{HUB_ADDRESS}/24", "dev", "br0")
            _ip("-n", hub, "link", "set", "br0", "up")
        self.hub = self._host("hub", HUB_ADDRESS if self.namespaced else "127.0.0.1")

    @property
    def mode(self) -> str:
        """What ran, in words, for the test report."""
        if self.namespaced:
            return f"network namespaces {self.run}-* on a bridge, {SUBNET}.0/24"
        return f"loopback ports (no network namespaces: {namespaces_unavailable()})"

    def host(self, name: str, number: int) -> Host:
        """A new host on the network: in namespace mode at SUBNET.number, joined to the hub's bridge."""
        if not self.namespaced:
            return self._host(name, "127.0.0.1")
        hub, namespace = self.namespaces[0], self._namespace(name)
        veth = f"v{number}"
        _ip("-n", hub, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        _ip("-n", hub, "link", "set", veth, "master", "br0", "up")
        _ip("-n", namespace, "addr", "add", f"{SUBNET}.{number}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        return self._host(name, f"{SUBNET}.{number}")

    @contextmanager
    def inside(self) -> Iterator[None]:
        """Meanwhile, sockets this thread (and threads it starts) opens are on the hub, where the hosts are."""
        if not self.namespaced:
            yield
            return
        with open("/proc/thread-self/ns/net") as home, open(NETNS_DIR / self.namespaces[0]) as hub:
            _setns(hub.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())

    def remove(self) -> None:
        """Delete every namespace (their processes must be gone already)."""
        for namespace in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True, check=False)
        self.namespaces.clear()

    def _namespace(self, name: str) -> str:
        namespace = f"{self.run}-{name}"
        _ip("netns", "add", namespace)
        self.namespaces.append(namespace)
        _ip("-n", namespace, "link", "set", "lo", "up")
        return namespace

    def _host(self, name: str, address: str) -> Host:
        if not self.namespaced:
            return Host(name, address, (), namespaced=False)
        # Its own hostname (a UTS namespace) as well: workers on other hosts judge its jobs by their lease only.
        named = ("unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', f"{self.run}-{name}")
        return Host(name, address, ("ip", "netns", "exec", self.namespaces[-1], *named), namespaced=True)


@contextmanager
def network() -> Iterator[Network]:
    """A network for hosts (namespaces where they can be made, loopback otherwise), removed afterwards."""
    made = Network(namespaced=namespaces_unavailable() is None)
    try:
        made.make_hub()
        yield made
    finally:
        made.remove()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
