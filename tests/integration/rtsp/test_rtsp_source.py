"""VideoSource against a real RTSP server: reading, sampling, restarts, stalls, nothing listening.

Every wait is bounded by a deadline; the whole module runs in well under a minute.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamproc.errors import SourceDisconnected
from streamproc.retry import ConstantBackoff, Retry
from streamproc.sources import SourceConfig, VideoSource
from streamproc.sources.synth import write_pattern_video
from streamproc.types import FrameBatch

pytestmark = pytest.mark.integration

ServerFactory = Callable[..., Any]  # conftest.rtsp_server: returns an RtspServer


def live_config(url: str, **overrides: object) -> SourceConfig:
    fields: dict[str, object] = {
        "uri": url,
        "batch_frames": 4,
        "open_timeout_s": 5.0,
        "stall_timeout_s": 2.0,
        "reconnect_backoff_s": 0.2,
        "reconnect_backoff_cap_s": 0.5,
        "max_reconnects": 3,
    }
    fields.update(overrides)
    return SourceConfig.model_validate(fields)


def take(batches: Iterator[FrameBatch], n_frames: int, deadline_s: float) -> list[FrameBatch]:
    """Batches until ``n_frames`` frames arrived; fails (never hangs) past the deadline."""
    out: list[FrameBatch] = []
    deadline = time.monotonic() + deadline_s
    while sum(len(b) for b in out) < n_frames:
        assert time.monotonic() < deadline, (
            f"only {sum(len(b) for b in out)}/{n_frames} frames in {deadline_s}s"
        )
        out.append(next(batches))
    return out


def all_pts(batches: list[FrameBatch]) -> np.ndarray:
    return np.concatenate([b.pts for b in batches])


def test_reads_live_frames_in_batches(rtsp_server: ServerFactory) -> None:
    server = rtsp_server()
    with VideoSource(live_config(server.url)) as source:
        batches = take(iter(source), 30, deadline_s=15)
        stats = source.stats
    pts = all_pts(batches)
    assert all(1 <= len(b) <= 4 and b.frames.shape[1:] == (240, 320, 3) for b in batches)
    assert all(b.stream_id == f"127.0.0.1-{server.port}-stream" for b in batches)
    assert not any(b.end_of_stream for b in batches)
    assert np.all(np.diff(pts) > 0)
    assert stats["frames_emitted"] >= 30 and stats["reconnects"] == 0


def test_sampling_and_downscale_over_rtsp(rtsp_server: ServerFactory) -> None:
    server = rtsp_server()
    config = live_config(server.url, sample_fps=5.0, max_width=160)
    with VideoSource(config) as source:
        batches = take(iter(source), 6, deadline_s=15)
        stats = source.stats
    pts = all_pts(batches)[:6]
    assert batches[0].frames.shape[1:] == (120, 160, 3)
    assert np.allclose(np.diff(pts), 0.2, atol=0.05), pts
    assert stats["frames_skipped"] >= 3 * 5


def test_served_file_decodes_in_order(rtsp_server: ServerFactory, tmp_path: Path) -> None:
    """Content check: the moving square advances frame by frame (catches mis-decoded streams)."""
    video = write_pattern_video(tmp_path / "pattern.mp4", width=160, height=120, n_frames=60)
    server = rtsp_server(path=video)
    with VideoSource(live_config(server.url)) as source:
        frames = np.concatenate([b.frames for b in take(iter(source), 40, deadline_s=15)])[:40]
    row = frames[:, 60, :, :].min(axis=-1)  # through the square; only the square is this bright
    xs = [int(np.argmax(r > 200)) for r in row]
    assert all(r.max() > 200 for r in row)
    assert xs == sorted(xs) and len(set(xs)) >= 30, xs


def test_reconnects_after_server_restart(rtsp_server: ServerFactory) -> None:
    server = rtsp_server()
    retries: list[int] = []
    policy = Retry(ConstantBackoff(0.25), attempts=40, on_retry=lambda n, exc, wait: retries.append(n))
    source = VideoSource(live_config(server.url, max_reconnects=None), retry=policy)
    batches = iter(source)
    try:
        before = take(batches, 10, deadline_s=15)
        server.stop()
        restarter = threading.Timer(2.0, server.start)
        restarter.start()
        outage_started = time.monotonic()
        after: list[FrameBatch] = []
        deadline = outage_started + 20
        while source.stats["reconnects"] < 1 or sum(len(b) for b in after) < 10:
            assert time.monotonic() < deadline, f"no recovery: stats={source.stats}"
            after.append(next(batches))
        restarter.join()
    finally:
        source.close()
    pts = all_pts(before + after)
    assert np.all(np.diff(pts) > 0), "times must keep increasing across the reconnect"
    assert np.diff(pts).max() >= 1.5, "the outage shows as a gap in stream time"
    assert source.stats["reconnects"] >= 1
    assert retries, "failed connects went through the injected retry policy"
    assert source.stats["connect_failures"] == len(retries)


def test_nothing_listening_gives_up_after_max_reconnects(unused_rtsp_url: str) -> None:
    config = live_config(
        unused_rtsp_url, max_reconnects=2, reconnect_backoff_s=0.05, reconnect_backoff_cap_s=0.05
    )
    source = VideoSource(config)
    started = time.monotonic()
    with pytest.raises(SourceDisconnected, match=r"127\.0\.0\.1.*cannot open"):
        next(iter(source))
    assert time.monotonic() - started < 5
    assert source.stats["connect_failures"] == 3  # the first try and max_reconnects=2 retries
    source.close()


@pytest.fixture
def silent_listener() -> Iterator[str]:
    """A TCP port that accepts connections and never says a word (a hung camera)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield f"rtsp://127.0.0.1:{sock.getsockname()[1]}/stream"
    finally:
        sock.close()


def test_silent_server_times_out_when_opening(silent_listener: str) -> None:
    config = live_config(silent_listener, open_timeout_s=1.0, stall_timeout_s=1.0, max_reconnects=0)
    started = time.monotonic()
    with pytest.raises(SourceDisconnected), VideoSource(config) as source:
        next(iter(source))
    assert time.monotonic() - started < 4


def test_stall_mid_stream_is_detected(rtsp_server: ServerFactory) -> None:
    server = rtsp_server()
    config = live_config(server.url, stall_timeout_s=1.0, open_timeout_s=1.0, max_reconnects=0)
    with VideoSource(config) as source:
        batches = iter(source)
        take(batches, 5, deadline_s=15)
        server.pause()
        started = time.monotonic()
        with pytest.raises(SourceDisconnected):
            for _ in range(10_000):  # drains what was buffered, then must raise
                next(batches)
                assert time.monotonic() - started < 8, "a frozen server was never noticed"
        assert time.monotonic() - started < 8
        server.resume()
