"""Metrics: names and labels are checked; Prometheus series are real and scrapeable."""

from __future__ import annotations

import urllib.request

import pytest

from streamproc.errors import ConfigError
from streamproc.metrics import METRICS, NullRecorder, PrometheusRecorder


def test_counters_gauges_histograms() -> None:
    rec = PrometheusRecorder()
    rec.count("frames_decoded_total", 5, stream="a")
    rec.count("frames_decoded_total", stream="a")
    rec.gauge("tracks_open", 3, stream="a")
    rec.observe("stage_seconds", 0.02, stage="detect", stream="a")
    rec.observe("match_distance", 0.7)
    assert rec.value("frames_decoded_total", stream="a") == 6
    assert rec.value("tracks_open", stream="a") == 3
    assert rec.value("stage_seconds", stage="detect", stream="a") == 1
    assert rec.value("match_distance") == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.count("no_such_metric"), "unknown metric"),
        (lambda r: r.count("tracks_open", stream="a"), "is a gauge"),
        (lambda r: r.count("frames_decoded_total", camera="a"), "takes labels"),
        (lambda r: r.observe("stage_seconds", 1.0, stage="x"), "takes labels"),
    ],
)
@pytest.mark.parametrize("recorder", [NullRecorder, PrometheusRecorder])
def test_bad_names_and_labels(recorder: type, call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=message):
        call(recorder())


def test_endpoint_serves_every_recorded_metric_on_loopback() -> None:
    rec = PrometheusRecorder()
    for name, metric in METRICS.items():
        labels = dict.fromkeys(metric.labels, "x")
        {"counter": rec.count, "gauge": rec.gauge, "histogram": rec.observe}[metric.kind](name, 1.0, **labels)
    with rec.serve(0) as server:
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
    for name in METRICS:
        assert f"streamproc_{name}" in body
