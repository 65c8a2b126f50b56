"""One topology of hosts per module: started in parallel once, because each host is a process importing ImageGate."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.hosts.cluster import Cluster, cluster


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The running hosts; which network they are on (namespaces or loopback) is said in the test report."""
    with cluster(tmp_path_factory.mktemp("hosts")) as running:
        yield running


@pytest.fixture(autouse=True)
def _on_the_network(hosts: Cluster, record_property: Callable[[str, object], None]) -> Iterator[None]:
    """Each test talks to the hosts from the hub, where they are reachable; its report names the network."""
    record_property("network", hosts.network.mode)
    # tests/conftest.py prints it in the terminal summary, from whichever xdist worker ran the test.
    record_property("hosts", f"{len(hosts.apis)} API + {len(hosts.workers)} worker hosts on {hosts.network.mode}")
    with hosts.network.inside():
        yield
