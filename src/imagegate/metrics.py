"""Prometheus metrics, correct when several processes of one machine serve the same data folder.

Counters and histograms go through prometheus_client's multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set
(`imagegate serve` and `imagegate worker` set it to <data_dir>/metrics before anything imports this module, see
cli.common.prepare_metrics); queue depth, running jobs and bytes stored are read from the database at each
scrape, so they are the same whichever process answers. No label names a key or a prompt.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The metrics of one app; in multiprocess mode their values are shared through files."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.jobs = Counter(
            "imagegate_jobs_finished",
            "Jobs that reached a final state.",
            ["backend", "model", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "imagegate_job_duration_seconds",
            "Time jobs ran on their backend.",
            ["backend"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "imagegate_job_queue_wait_seconds",
            "Time jobs waited in the queue.",
            ["backend"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.http = Counter(
            "imagegate_http_requests", "HTTP requests answered.", ["route", "method", "status"], registry=self.registry
        )
        self.http_duration = Histogram(
            "imagegate_http_request_duration_seconds",
            "Time to answer HTTP requests.",
            ["route"],
            registry=self.registry,
        )
        self.backend_errors = Counter(
            "imagegate_backend_errors",
            "Jobs a backend failed, by error code.",
            ["backend", "code"],
            registry=self.registry,
        )

    def render(self, live: LiveFigures) -> bytes:
        """The exposition text: shared counters and histograms plus the live database figures."""
        registry = CollectorRegistry()
        if os.environ.get(MULTIPROC_ENV):
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            registry.register(_Forward(self.registry))
        registry.register(live)
        return generate_latest(registry)


class _Forward(Collector):
    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        yield from self.source.collect()


class LiveFigures(Collector):
    """Gauges read from the database just before a scrape (the same answer from every process)."""

    def __init__(self, queued: dict[str, int], running: dict[str, int], stored_bytes: int) -> None:
        self.queued = queued
        self.running = running
        self.stored_bytes = stored_bytes

    def collect(self) -> Iterator[Metric]:
        """queue depth and running jobs per backend, bytes stored."""
        depth = GaugeMetricFamily("imagegate_queue_depth", "Jobs waiting, per backend.", labels=["backend"])
        running = GaugeMetricFamily("imagegate_jobs_running", "Jobs running, per backend.", labels=["backend"])
        for backend in sorted(set(self.queued) | set(self.running)):
            depth.add_metric([backend], self.queued.get(backend, 0))
            running.add_metric([backend], self.running.get(backend, 0))
        stored = GaugeMetricFamily("imagegate_stored_bytes", "Bytes of images and inputs of live jobs.")
        stored.add_metric([], self.stored_bytes)
        yield depth
        yield running
        yield stored
