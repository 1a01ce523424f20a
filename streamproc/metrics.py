"""Metrics hooks: a recorder object passed into every stage and runner.

Names live in one catalogue (``METRICS``) so dashboards and alerts can be checked
against it. ``NullRecorder`` does nothing (the default); ``PrometheusRecorder`` keeps
real Prometheus series and ``serve`` exposes them, on 127.0.0.1 unless told otherwise, until
the returned ``MetricsServer`` is closed.

Example:
    >>> rec = PrometheusRecorder()
    >>> rec.count("frames_decoded_total", 3, stream="cam1")
    >>> rec.value("frames_decoded_total", stream="cam1")
    3.0
    >>> with rec.serve(0) as server:
    ...     server.url.startswith("http://127.0.0.1:")
    True
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from streamproc.errors import ConfigError

Kind = Literal["counter", "histogram", "gauge"]
NAMESPACE = "streamproc"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DISTANCE_BUCKETS = (0.2, 0.4, 0.6, 0.8, 1.0, 1.1, 1.2, 1.4, 1.6, 2.0, 3.0, 4.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class Metric:
    kind: Kind
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


METRICS: dict[str, Metric] = {
    "frames_in_total": Metric("counter", "frames read from a source", ("stream",)),
    "frames_decoded_total": Metric("counter", "frames decoded and passed on", ("stream",)),
    "frames_dropped_total": Metric("counter", "frames dropped by the live-source drop policy", ("stream",)),
    "decode_errors_total": Metric("counter", "undecodable packets or inputs", ("stream",)),
    "reconnects_total": Metric("counter", "successful source reconnects", ("stream",)),
    "source_failures_total": Metric("counter", "sources that ended with an error", ("stream",)),
    "stage_seconds": Metric(
        "histogram", "time spent in a stage per batch", ("stage", "stream"), LATENCY_BUCKETS
    ),
    "batch_size": Metric("histogram", "items per batch entering a stage", ("stage",), SIZE_BUCKETS),
    "in_flight": Metric("gauge", "batches or requests in flight", ("stage",)),
    "queue_depth": Metric("gauge", "items waiting in a queue", ("stage",)),
    "faces_detected_total": Metric("counter", "faces found by the detector", ("stream",)),
    "faces_embedded_total": Metric("counter", "faces embedded", ("stream", "model_version")),
    "tracks_open": Metric("gauge", "tracks currently open", ("stream",)),
    "tracks_closed_total": Metric("counter", "tracks closed", ("stream",)),
    "decisions_total": Metric("counter", "decisions emitted", ("stream", "known", "kind", "model_version")),
    "match_distance": Metric(
        "histogram", "squared L2 distance of the nearest identity", (), DISTANCE_BUCKETS
    ),
    "gallery_size": Metric("gauge", "identities in the in-memory gallery index", ("model_version",)),
    "gallery_search_seconds": Metric("histogram", "gallery k-NN time per call", (), LATENCY_BUCKETS),
    "events_written_total": Metric("counter", "events written by a sink", ("sink",)),
    "model_info": Metric("gauge", "1 for each model version in service", ("model_version", "role")),
}


def _check(name: str, labels: dict[str, str], kind: Kind) -> Metric:
    metric = METRICS.get(name)
    if metric is None:
        raise ConfigError(f"unknown metric {name!r}; add it to streamproc.metrics.METRICS")
    if metric.kind != kind:
        raise ConfigError(f"metric {name!r} is a {metric.kind}, not a {kind}")
    if set(labels) != set(metric.labels):
        raise ConfigError(f"metric {name!r} takes labels {metric.labels}, got {tuple(labels)}")
    return metric


class Recorder:
    """The interface every stage and runner calls; this base checks names and labels."""

    def count(self, name: str, value: float = 1.0, **labels: str) -> None:
        self._count(name, _check(name, labels, "counter"), value, labels)

    def observe(self, name: str, value: float, **labels: str) -> None:
        self._observe(name, _check(name, labels, "histogram"), value, labels)

    def gauge(self, name: str, value: float, **labels: str) -> None:
        self._gauge(name, _check(name, labels, "gauge"), value, labels)

    def _count(self, name: str, metric: Metric, value: float, labels: dict[str, str]) -> None:
        return None

    def _observe(self, name: str, metric: Metric, value: float, labels: dict[str, str]) -> None:
        return None

    def _gauge(self, name: str, metric: Metric, value: float, labels: dict[str, str]) -> None:
        return None


class NullRecorder(Recorder):
    """Records nothing (but still refuses unknown names, so typos show in tests)."""


class PrometheusRecorder(Recorder):
    """Prometheus series in their own registry (several recorders never collide)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self._series: dict[str, Counter | Gauge | Histogram] = {}

    def _get(self, name: str, metric: Metric) -> Counter | Gauge | Histogram:
        if name not in self._series:
            full = f"{NAMESPACE}_{name}"
            if metric.kind == "counter":
                # prometheus_client appends _total itself
                self._series[name] = Counter(
                    full.removesuffix("_total"), metric.help, metric.labels, registry=self.registry
                )
            elif metric.kind == "gauge":
                self._series[name] = Gauge(full, metric.help, metric.labels, registry=self.registry)
            else:
                self._series[name] = Histogram(
                    full, metric.help, metric.labels, buckets=metric.buckets, registry=self.registry
                )
        return self._series[name]

    def _labelled(self, name: str, metric: Metric, labels: dict[str, str]) -> Counter | Gauge | Histogram:
        series = self._get(name, metric)
        return series.labels(**labels) if metric.labels else series

    def _count(self, name: str, metric: Metric, value: float, labels: dict[str, str]) -> None:
        self._labelled(name, metric, labels).inc(value)  # type: ignore[union-attr]

    def _observe(self, name: str, metric: Metric, value: float, labels: dict[str, str]) -> None:
        self._labelled(name, metric, labels).observe(value)  # type: ignore[union-attr]

    def _gauge(self, name: str, metric: Metric, value: float, labels: dict[str, str]) -> None:
        self._labelled(name, metric, labels).set(value)  # type: ignore[union-attr]

    def value(self, name: str, **labels: str) -> float | None:
        """Current value of a counter or gauge (a histogram's count), for tests and summaries."""
        metric = METRICS[name]
        sample = f"{NAMESPACE}_{name}"
        if metric.kind == "histogram":
            sample += "_count"
        return self.registry.get_sample_value(sample, labels or None)

    def serve(self, port: int = 0, addr: str = "127.0.0.1") -> MetricsServer:
        """Expose ``/metrics`` over HTTP until the returned server is closed (port 0 = any free one).
        Loopback unless ``addr`` says otherwise."""
        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        return MetricsServer(addr, int(server.server_port), server, thread)


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint: ``close()`` (or leaving ``with``) stops it and frees its port.

    Example:
        >>> server = PrometheusRecorder().serve(0)
        >>> server.close(); server.closed
        True
    """

    addr: str
    port: int
    _httpd: Any = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    closed: bool = False

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving, close the listening socket and wait for the serving thread (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
