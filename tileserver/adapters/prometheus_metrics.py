"""Prometheus metrics (prometheus-client), aggregated over the server processes.

With `--workers N`, the master gives every server process the same
PROMETHEUS_MULTIPROC_DIR before it starts them, so that each one writes its values to
files there and `/metrics`, whichever process answers it, reads them all. The
variable must be set before `prometheus_client` is first imported in a process, which
is why this module imports it only when `PrometheusMetrics` is built.

The per-request counts (requests, their latency, tiles by source) are kept in plain
integers and folded into the metrics once per event-loop iteration, and before every
scrape: with several server processes each value update writes a shared memory-mapped
file (and asks the process id), which once per request was 5 % of a cache hit.
"""

from __future__ import annotations

import asyncio
import bisect
import glob
import os
from collections.abc import Iterable
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_RENDER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class PrometheusMetrics:
    """The server's counters and histograms, in a registry of their own."""

    content_type = CONTENT_TYPE

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = bool(os.environ.get(MULTIPROCESS_ENV))
        self._registry = CollectorRegistry(auto_describe=True)
        registry = self._registry
        self.requests = Counter(
            "tileserver_http_requests",
            "HTTP requests answered, by endpoint and status",
            ["endpoint", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "tileserver_http_request_duration_seconds",
            "Time to answer a request, by endpoint and layer",
            ["endpoint", "layer"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.tiles = Counter(
            "tileserver_tiles",
            "Tiles answered, by layer and source (memcached, memory, store, render, "
            "coalesced: waited for another request's render, hot: the in-process tier, "
            "missing: empty/no content, stale: past its expiry, within the layer's "
            "stale_while_revalidate or stale_if_error)",
            ["layer", "source"],
            registry=registry,
        )
        self.renders = Counter(
            "tileserver_renders", "Metatiles rendered", ["layer"], registry=registry
        )
        self.render_time = Histogram(
            "tileserver_render_duration_seconds",
            "Time to render, cut and encode one metatile",
            ["layer"],
            buckets=_RENDER_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "tileserver_dependency_errors",
            "Failures of Memcached, tile stores, upstream WMS and renderers, by kind",
            ["dependency", "kind"],
            registry=registry,
        )
        # "min" over the server processes: 0 as soon as one of them finds the server down.
        self.cache_servers = Gauge(
            "tileserver_cache_server_up",
            "Each Memcached server: 1 when it answers, 0 while its keys go to the next "
            "server on the ring (or to the in-process cache)",
            ["server"],
            registry=registry,
            multiprocess_mode="min",
        )
        # The labelled children of the per-request metrics, looked up once: `labels()`
        # costs more than the increment (few combinations: endpoints x statuses x layers).
        self._children: dict[tuple[str, ...], Any] = {}
        # Not folded yet: counts by (metric name, labels); latency by labels: the sum and
        # the count per bucket (the last one +Inf).
        self._counts: dict[tuple[str, ...], int] = {}
        self._latencies: dict[tuple[str, str], tuple[list[float], list[int]]] = {}
        self._fold_scheduled = False

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, endpoint: str, status: int, seconds: float, layer: str = "") -> None:
        key = ("tileserver_http_requests", endpoint, str(status))
        self._counts[key] = self._counts.get(key, 0) + 1
        latency = self._latencies.get((endpoint, layer))
        if latency is None:
            latency = self._latencies[(endpoint, layer)] = (
                [0.0],
                [0] * (len(_LATENCY_BUCKETS) + 1),
            )
        latency[0][0] += seconds
        latency[1][bisect.bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        self._schedule_fold()

    def tile(self, layer: str, source: str) -> None:
        key = ("tileserver_tiles", layer, source)
        self._counts[key] = self._counts.get(key, 0) + 1
        self._schedule_fold()

    def _schedule_fold(self) -> None:
        if self._fold_scheduled:
            return
        try:
            asyncio.get_running_loop().call_soon(self.fold)
        except RuntimeError:  # no event loop: now
            self.fold()
            return
        self._fold_scheduled = True

    def fold(self) -> None:
        """Adds the counts kept since the last fold to the metrics."""
        self._fold_scheduled = False
        counts, self._counts = self._counts, {}
        latencies, self._latencies = self._latencies, {}
        metrics = {"tileserver_http_requests": self.requests, "tileserver_tiles": self.tiles}
        for (name, *labels), count in counts.items():
            self._child(metrics[name], *labels).inc(count)
        for (endpoint, layer), (total, buckets) in latencies.items():
            child = self._child(self.latency, endpoint, layer)
            # prometheus_client's Histogram.observe, for many observations at once.
            child._sum.inc(total[0])
            for index, count in enumerate(buckets):
                if count:
                    child._buckets[index].inc(count)

    def rendered(self, layer: str, seconds: float) -> None:
        self.renders.labels(layer).inc()
        self.render_time.labels(layer).observe(seconds)

    def cache_server(self, address: str, up: bool) -> None:
        self.cache_servers.labels(address).set(1 if up else 0)

    def error(self, dependency: str, kind: str) -> None:
        self.errors.labels(dependency, kind).inc()

    def exposition(self) -> bytes:
        """The text format of every process's values (this process's alone without
        PROMETHEUS_MULTIPROC_DIR), as last folded: call `fold` first, in the event loop's
        thread (this may run in another)."""
        from prometheus_client import CollectorRegistry, generate_latest

        if not self.multiprocess:
            return bytes(generate_latest(self._registry))
        registry = CollectorRegistry()
        registry.register(_WrittenValueFiles(os.environ[MULTIPROCESS_ENV]))
        return bytes(generate_latest(registry))

    def counters(self) -> dict[str, dict[str, float]]:
        """The counters of `exposition` as plain data (for /admin/stats): by sample name,
        each value by its labels written `name=value,...` ("" without labels)."""
        from prometheus_client.parser import text_string_to_metric_families

        found: dict[str, dict[str, float]] = {}
        for family in text_string_to_metric_families(self.exposition().decode()):
            if family.type != "counter":
                continue
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                    found.setdefault(sample.name, {})[labels] = sample.value
        return found


class _WrittenValueFiles:
    """prometheus_client's MultiProcessCollector, without the value files that a process
    has created but not sized yet. Such a file is empty for a moment when a process
    first writes a metric (and for good when the process is killed in that moment);
    prometheus_client reads it as a corrupt file and fails the whole scrape
    (prometheus/client_python#1199). A file sized once is never empty again."""

    def __init__(self, directory: str) -> None:
        self._directory = directory

    def collect(self) -> Iterable[Any]:
        from prometheus_client.multiprocess import MultiProcessCollector

        files = []
        for name in glob.glob(os.path.join(glob.escape(self._directory), "*.db")):
            try:
                if os.stat(name).st_size:
                    files.append(name)
            except FileNotFoundError:
                continue
        merged: Iterable[Any] = MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        return merged
