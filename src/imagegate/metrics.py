"""Prometheus metrics, correct when several processes of one machine serve the same data folder.

Counters and histograms go through prometheus_client's multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set
(`imagegate serve` and `imagegate worker` set it before anything imports this module, see
cli.common.prepare_metrics: a tmpfs folder by default, never the data volume); queue depth, running jobs and
bytes stored are read from the database at each scrape, so they are the same whichever process answers. No
label names a key or a prompt.

Metrics never take the service down: their files' pages are reserved before they are memory-mapped (a sparse
mapping on a full disk is a SIGBUS, which no handler can catch), and any failure to write one loses that
sample only.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from typing import Any

import prometheus_client.values
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)
# An upper bound of one entry's bytes beyond its key: length, padding and two doubles.
ENTRY_OVERHEAD = 32
RESERVE_BYTES = 64 * 1024

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

MAX_CHILDREN = 10_000  # labelled children kept per metric (a bound, not a limit: more are still written)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ReservedMmapedDict(MmapedDict):
    """prometheus_client's metrics file, with disk blocks allocated before any write lands on them.

    Writing to a mapped page the filesystem cannot back kills the process with SIGBUS; allocated ahead (a
    RESERVE_BYTES step at a time, so tmpfs memory follows what is used), a full disk is an OSError at
    allocation instead, which the metric turns into a lost sample.
    """

    def __init__(self, filename: str, read_mode: bool = False) -> None:
        if not read_mode:
            with open(filename, "a+b") as handle:
                size = os.fstat(handle.fileno()).st_size
                _reserve(handle.fileno(), min(size, RESERVE_BYTES) or RESERVE_BYTES)
        super().__init__(filename, read_mode)  # type: ignore[no-untyped-call]
        self.reserved = max(self._used, min(self._capacity, RESERVE_BYTES))

    def _init_value(self, key: str) -> None:
        needed = self._used + len(key.encode()) + ENTRY_OVERHEAD
        if needed > self.reserved:
            capacity = self._capacity
            while needed > capacity:  # as the parent grows the file
                capacity *= 2
            target = min(-(-needed // RESERVE_BYTES) * RESERVE_BYTES, capacity)
            _reserve(self._f.fileno(), target)
            self.reserved = target
        super()._init_value(key)  # type: ignore[no-untyped-call]


def _reserve(fd: int, size: int) -> None:
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as error:
        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a filesystem that cannot reserve: as before
            raise


def follow_multiprocess_setting() -> None:
    """Choose prometheus_client's value class from PROMETHEUS_MULTIPROC_DIR as it is now.

    prometheus_client chooses once, when it is first imported; a command module that imports it before the
    variable is set (any import chain reaching this module) would otherwise keep every counter in memory, and
    /metrics, which reads the files, would show none.
    """
    if MULTIPROC_ENV in os.environ and prometheus_client.values.ValueClass is prometheus_client.values.MutexValue:
        prometheus_client.values.ValueClass = prometheus_client.values.get_value_class()  # type: ignore[no-untyped-call]


def use_reserved_files() -> None:
    """Make prometheus_client's multiprocess values use ReservedMmapedDict."""
    prometheus_client.values.MmapedDict = ReservedMmapedDict  # type: ignore[attr-defined]


class Guarded:
    """A counter or histogram whose writes never raise: a failure loses that sample, and is logged once."""

    warned = False

    def __init__(self, metric: Counter | Histogram) -> None:
        self._children: dict[tuple[str, ...], Sample] = {}
        self.metric = metric

    @property
    def metric(self) -> Counter | Histogram:
        """The prometheus_client metric written to."""
        return self._metric

    @metric.setter
    def metric(self, metric: Counter | Histogram) -> None:
        self._metric = metric
        self._children = {}

    def labels(self, *values: str) -> Sample:
        """The labelled child, or a sample that records nothing when it could not be made.

        Children are kept here by their label values (bounded: no label names a key or a prompt), so a request's
        observations skip prometheus_client's lock and label checks; a child made is valid for the process's life.
        """
        sample = self._children.get(values)
        if sample is not None:
            return sample
        try:
            sample = Sample(self.metric.labels(*values))
        except Exception:
            lost_sample()
            return Sample(None)
        if len(self._children) < MAX_CHILDREN:
            self._children[values] = sample
        return sample


class Sample:
    """One labelled child of a Guarded metric."""

    def __init__(self, child: Any) -> None:
        self.child = child

    def inc(self, amount: float = 1) -> None:
        """Add to a counter (or lose the sample)."""
        self._write("inc", amount)

    def observe(self, value: float) -> None:
        """Observe into a histogram (or lose the sample)."""
        self._write("observe", value)

    def _write(self, method: str, value: float) -> None:
        if self.child is None:
            return
        try:
            getattr(self.child, method)(value)
        except Exception:
            lost_sample()


def lost_sample() -> None:
    """A metric could not be written: say so once per process, then keep quiet (the service goes on)."""
    if not Guarded.warned:
        Guarded.warned = True
        logger.exception("a metrics sample was lost (is the metrics folder full or unwritable?); serving goes on")


class Metrics:
    """The metrics of one app; in multiprocess mode their values are shared through files."""

    def __init__(self) -> None:
        use_reserved_files()
        self.registry = CollectorRegistry(auto_describe=True)
        self.jobs = Guarded(
            Counter(
                "imagegate_jobs_finished",
                "Jobs that reached a final state.",
                ["backend", "model", "status"],
                registry=self.registry,
            )
        )
        self.duration = Guarded(
            Histogram(
                "imagegate_job_duration_seconds",
                "Time jobs ran on their backend.",
                ["backend"],
                buckets=DURATION_BUCKETS,
                registry=self.registry,
            )
        )
        self.queue_wait = Guarded(
            Histogram(
                "imagegate_job_queue_wait_seconds",
                "Time jobs waited in the queue.",
                ["backend"],
                buckets=DURATION_BUCKETS,
                registry=self.registry,
            )
        )
        self.http = Guarded(
            Counter(
                "imagegate_http_requests",
                "HTTP requests answered.",
                ["route", "method", "status"],
                registry=self.registry,
            )
        )
        self.http_duration = Guarded(
            Histogram(
                "imagegate_http_request_duration_seconds",
                "Time to answer HTTP requests.",
                ["route"],
                registry=self.registry,
            )
        )
        self.backend_errors = Guarded(
            Counter(
                "imagegate_backend_errors",
                "Jobs a backend failed, by error code.",
                ["backend", "code"],
                registry=self.registry,
            )
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
