"""The ``/metrics`` endpoint stops when told (``MetricsServer.close``) and when ``streamproc run``
returns: the port is free again and can be served on at once."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from streamproc.cli import main
from streamproc.gallery.embedded import stop_embedded
from streamproc.metrics import PrometheusRecorder
from streamproc.sources.synth import write_pattern_video

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def test_close_stops_serving_and_frees_the_port() -> None:
    recorder = PrometheusRecorder()
    recorder.count("frames_in_total", 3, stream="cam")
    server = recorder.serve(0)
    assert 'streamproc_frames_in_total{stream="cam"} 3.0' in scrape(server.url)
    server.close()
    server.close()  # idempotent
    assert refused(server.port)
    with pytest.raises(urllib.error.URLError):
        scrape(server.url)
    with recorder.serve(server.port) as again:  # the same port at once (the old socket is closed)
        assert again.port == server.port and "streamproc_frames_in_total" in scrape(again.url)
    assert refused(server.port)


def test_cli_run_stops_its_metrics_server_at_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mtcnn_weights_dir: Path, facenet_keras_h5: Path
) -> None:
    monkeypatch.setenv("STREAMPROC_DATA_DIR", str(tmp_path / "data"))  # an embedded gallery of its own
    video = write_pattern_video(tmp_path / "clip.mp4", width=160, height=120, n_frames=10)
    port = free_port()
    sets = [
        f"metrics.port={port}",
        "embedder.threads=1",
        f"emit.jsonl_path={json.dumps(str(tmp_path / 'e.jsonl'))}",
    ]
    argv = ["run", "--runner", "local", "--source", str(video)]
    for item in sets:
        argv += ["--set", item]
    try:
        assert main(argv) == 0
    finally:
        stop_embedded()
    assert refused(port), "the metrics endpoint outlived the command"
    with PrometheusRecorder().serve(port) as server:  # and the port can be bound again
        assert server.port == port
