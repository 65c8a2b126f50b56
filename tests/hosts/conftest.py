"""One topology of hosts per module: started in parallel once, because each host is a process importing ImageGate."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.hosts.cluster import Cluster, cluster


@pytest.fixture(scope="module")
def hosts(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The running hosts; which network they are on (namespaces or loopback) is said in the test report."""
    with cluster(tmp_path_factory.mktemp("hosts")) as running:
        _say(
            request.config,
            f"tests/hosts: {len(running.apis)} API + {len(running.workers)} worker hosts on {running.network.mode}",
        )
        yield running


def _say(config: pytest.Config, line: str) -> None:
    """A line in the terminal report, past output capture: which network ran is never left unsaid."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


@pytest.fixture(autouse=True)
def _on_the_network(hosts: Cluster, record_property: Callable[[str, object], None]) -> Iterator[None]:
    """Each test talks to the hosts from the hub, where they are reachable; its report names the network."""
    record_property("network", hosts.network.mode)
    with hosts.network.inside():
        yield
