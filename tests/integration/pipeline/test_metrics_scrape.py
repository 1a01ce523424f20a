"""A real run exposes every series the Grafana dashboard and the Prometheus alerts query.

The pipeline runs on ``demo_video`` with a ``PrometheusRecorder`` served on 127.0.0.1 port 0; the
test scrapes ``/metrics`` over HTTP, as Prometheus would, and looks for each ``streamproc_*`` name in
the PromQL of ``deploy/``. It also checks, in the kernel's socket table, that the endpoint listens
on loopback only.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamproc.metrics import PrometheusRecorder
from streamproc.runtime.local import LocalRunner
from streamproc.runtime.pipeline import RayRunner
from streamproc.stages.emit import Sink
from streamproc.types import Decision

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "streamproc-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
SERIES_RE = re.compile(r"\bstreamproc_[a-z0-9_]*[a-z0-9]")
MakeConfig = Callable[..., Any]


class Counting(Sink):
    """Accepts every event (the run needs a sink for ``events_written_total``)."""

    name = "counting"

    def _write(self, decisions: list[Decision]) -> list[Decision]:
        return decisions


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def queried_series() -> set[str]:
    """Every ``streamproc_*`` series named in a dashboard target or an alert rule expression."""
    exprs = [
        target["expr"]
        for panel in _panels(json.loads(DASHBOARD.read_text())["panels"])
        for target in panel.get("targets", [])
    ]
    exprs += [
        str(rule.get("expr", ""))
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
    ]
    return {name for expr in exprs for name in SERIES_RE.findall(expr)}


def scraped_series(port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on ``port``, from /proc/net/tcp and tcp6."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(address)
            # the kernel prints each 32-bit word in host (little-endian) order
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, words))
    return found


def test_queried_series_are_found_in_the_deploy_files() -> None:
    series = queried_series()
    assert {"streamproc_tracks_open", "streamproc_queue_depth", "streamproc_decisions_total"} <= series


@pytest.mark.parametrize("runner", [LocalRunner, RayRunner])
def test_run_exposes_every_series_the_dashboard_and_alerts_query(
    runner: type[LocalRunner] | type[RayRunner],
    ray_cluster: None,
    make_config: MakeConfig,
    demo_video: Path,
) -> None:
    recorder = PrometheusRecorder()
    with recorder.serve(port=0, addr="127.0.0.1") as server:
        assert listening_addresses(server.port) == {"127.0.0.1"}
        started = time.monotonic()
        summary = runner(make_config([{"uri": str(demo_video)}]), recorder=recorder, sinks=[Counting()]).run()
        print(f"\n{runner.name}: run {time.monotonic() - started:.1f}s, {len(summary.decisions)} decisions")
        scraped = scraped_series(server.port)

    assert summary.ok, summary.streams
    assert summary.decisions
    missing = queried_series() - scraped
    assert not missing, f"queried by deploy/ but not exposed after a {runner.name} run: {sorted(missing)}"
    assert recorder.value("tracks_open", stream="demo") == 0  # the stream ended: every track closed
    assert recorder.value("queue_depth", stage="chain") == 0
    assert recorder.value("frames_in_total", stream="demo") == 54
