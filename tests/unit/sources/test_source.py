"""VideoSource on files and on scripted fake readers: batching, end of stream, reconnects, watchdog,
drop policy, close; and SourceConfig."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from streamproc.errors import DecodeError, SourceDisconnected
from streamproc.retry import ConstantBackoff, Retry
from streamproc.sources import DecodedFrame, FrameQueue, SourceConfig, VideoSource
from streamproc.sources.source import FrameReader
from streamproc.sources.synth import write_pattern_video
from streamproc.types import FrameBatch

NO_WAIT = Retry(ConstantBackoff(0.0), attempts=5, sleep=lambda _s: None)


class FakeReader:
    """Yields frames with the given times, then optionally blocks or fails."""

    fps = 10.0

    def __init__(
        self,
        times: list[float],
        *,
        then_raise: Exception | None = None,
        then_block: threading.Event | None = None,
        size: tuple[int, int] = (8, 6),
    ) -> None:
        self.times = times
        self.then_raise = then_raise
        self.then_block = then_block
        self.size = size
        self.frames_decoded = self.frames_skipped = self.decode_errors = 0
        self.last_progress = time.monotonic()
        self.finished = threading.Event()
        self.unblocked = False  # then_block was set (or its wait ran out): the hang is over
        self.closed = False

    def __iter__(self) -> Iterator[DecodedFrame]:
        width, height = self.size
        for i, t in enumerate(self.times):
            self.frames_decoded += 1
            self.last_progress = time.monotonic()
            yield DecodedFrame(np.full((height, width, 3), i % 256, np.uint8), t, i)
        self.finished.set()
        if self.then_block is not None:
            self.then_block.wait(10)
            self.unblocked = True
        if self.then_raise is not None:
            raise self.then_raise

    def close(self) -> None:
        self.closed = True


def scripted(*steps: FakeReader | Exception | Callable[[], FakeReader]) -> Callable[[], FrameReader]:
    """A reader factory that plays the steps in order: a reader, an error raised at open, or a callable."""
    queue = list(steps)

    def open_reader() -> FrameReader:
        step = queue.pop(0)
        if isinstance(step, Exception):
            raise step
        return step() if callable(step) and not isinstance(step, FakeReader) else step

    return open_reader


def config(**overrides: Any) -> SourceConfig:
    fields: dict[str, Any] = {"uri": "rtsp://cam/stream", "batch_frames": 4, "stall_timeout_s": 5.0}
    fields.update(overrides)
    return SourceConfig.model_validate(fields)


def drain(source: VideoSource, most: int = 1000) -> list[FrameBatch]:
    out = []
    for batch in source:
        out.append(batch)
        assert len(out) <= most, "the source does not end"
    return out


# -- files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_frames", "batch_frames", "sizes"),
    [(10, 4, [4, 4, 2]), (8, 4, [4, 4]), (3, 8, [3]), (1, 1, [1])],
)
def test_file_batches_and_end_of_stream(
    tmp_path: Path, n_frames: int, batch_frames: int, sizes: list[int]
) -> None:
    path = write_pattern_video(tmp_path / "v.mp4", width=64, height=48, n_frames=n_frames, fps=10)
    with VideoSource(SourceConfig(uri=str(path), batch_frames=batch_frames)) as source:
        batches = drain(source)
        stats = source.stats
    assert [len(b) for b in batches] == sizes
    assert [b.end_of_stream for b in batches] == [False] * (len(sizes) - 1) + [True]
    assert {b.stream_id for b in batches} == {"v"}
    assert np.allclose(np.concatenate([b.pts for b in batches]), np.arange(n_frames) / 10)
    assert stats["frames_decoded"] == stats["frames_emitted"] == n_frames
    assert stats["reconnects"] == stats["frames_dropped"] == 0


def test_bad_file_fails_once_without_retrying(tmp_path: Path) -> None:
    path = tmp_path / "bad.mp4"
    path.write_text("not a video")
    source = VideoSource(SourceConfig(uri=str(path)))
    with pytest.raises(DecodeError, match=r"bad\.mp4"):
        drain(source)
    assert source.stats["connect_failures"] == 1


def test_file_without_frames_is_a_decode_error() -> None:
    source = VideoSource(config(uri="/v/empty.mp4"), reader_factory=scripted(FakeReader([])))
    with pytest.raises(DecodeError, match="no decodable video frames"):
        drain(source)


# -- live: reconnects -------------------------------------------------------------------------


def test_reconnect_goes_through_retry_and_time_keeps_increasing() -> None:
    retries: list[int] = []
    policy = Retry(
        ConstantBackoff(0.0), attempts=5, sleep=lambda _s: None, on_retry=lambda n, e, w: retries.append(n)
    )
    factory = scripted(
        FakeReader([10.0, 10.1, 10.2], then_raise=SourceDisconnected("cable pulled")),
        SourceDisconnected("connection refused"),
        FakeReader([0.0, 0.1, 0.2, 0.3]),  # the camera restarts its clock
        SourceDisconnected("gone for good"),
        SourceDisconnected("gone for good"),
        SourceDisconnected("gone for good"),
        SourceDisconnected("gone for good"),
        SourceDisconnected("gone for good"),
    )
    source = VideoSource(config(), retry=policy, reader_factory=factory)
    batches: list[FrameBatch] = []
    with pytest.raises(SourceDisconnected, match="gone for good"):
        for batch in source:
            batches.append(batch)
    pts = np.concatenate([b.pts for b in batches])
    assert len(pts) == 7 and np.all(np.diff(pts) > 0)
    assert np.allclose(pts[:3], [10.0, 10.1, 10.2])
    assert source.stats["reconnects"] == 1
    assert source.stats["connect_failures"] == 1 + 5  # one before the recovery, five when giving up
    assert retries == [1, 1, 2, 3, 4]  # every successful connect starts a fresh count


def test_non_retryable_error_is_not_retried() -> None:
    factory = scripted(DecodeError("/v: not video"), FakeReader([0.0]))
    source = VideoSource(config(), retry=NO_WAIT, reader_factory=factory)
    with pytest.raises(DecodeError):
        drain(source)
    assert source.stats["connect_failures"] == 1


def test_end_of_a_live_stream_reconnects() -> None:
    factory = scripted(FakeReader([0.0, 0.1]), FakeReader([0.0, 0.1]), SourceDisconnected("down"))
    retry = Retry(ConstantBackoff(0.0), attempts=1, sleep=lambda _s: None)
    source = VideoSource(config(), retry=retry, reader_factory=factory)
    frames: list[float] = []
    with pytest.raises(SourceDisconnected):
        for batch in source:
            frames.extend(batch.pts)
    assert len(frames) == 4 and source.stats["reconnects"] == 1


# -- watchdog, drop policy, close ---------------------------------------------------------------


def test_watchdog_fires_when_a_read_hangs() -> None:
    hang = threading.Event()
    reader = FakeReader([0.0, 0.1], then_block=hang)
    source = VideoSource(config(live=False, stall_timeout_s=0.3), reader_factory=scripted(reader))
    try:
        with pytest.raises(SourceDisconnected, match="stalled"):
            drain(source)
        assert reader.finished.is_set() and not reader.unblocked  # fired during the hang, not after
    finally:
        hang.set()
        source.close()


def test_watchdog_fires_when_opening_hangs() -> None:
    hang = threading.Event()
    opened: list[bool] = []

    def slow_open() -> FakeReader:
        hang.wait(10)
        opened.append(True)
        return FakeReader([0.0])

    source = VideoSource(config(open_timeout_s=0.3, max_reconnects=0), reader_factory=scripted(slow_open))
    try:
        with pytest.raises(SourceDisconnected, match="could not open"):
            drain(source)
        assert opened == []  # fired while the open still hung, not after it returned
    finally:
        hang.set()
        source.close()


@pytest.mark.parametrize(("policy", "expect_drops"), [("drop_oldest", True), ("block", False)])
def test_slow_consumer_drop_policy(policy: str, expect_drops: bool) -> None:
    reader = FakeReader([i / 10 for i in range(50)])
    factory = scripted(reader, SourceDisconnected("done"))
    retry = Retry(ConstantBackoff(0.0), attempts=1, sleep=lambda _s: None)
    cfg = config(queue_frames=4, batch_frames=2, drop_policy=policy)
    source = VideoSource(cfg, retry=retry, reader_factory=factory)
    pts: list[float] = []
    with pytest.raises(SourceDisconnected):
        for batch in source:
            pts.extend(batch.pts)
            if expect_drops and len(pts) <= 2:
                assert reader.finished.wait(5)  # a slow consumer: the reader runs far ahead
    stats = source.stats
    assert stats["frames_emitted"] + stats["frames_dropped"] == 50
    assert (stats["frames_dropped"] > 0) == expect_drops
    assert np.all(np.diff(pts) > 0)


def test_close_from_another_thread_ends_iteration() -> None:
    hang = threading.Event()
    reader = FakeReader([0.0], then_block=hang)
    source = VideoSource(config(), reader_factory=scripted(reader))
    batches = iter(source)
    assert len(next(batches)) == 1
    threading.Timer(0.2, source.close).start()
    assert list(batches) == []
    assert not reader.unblocked  # ended by close(), while the read still hung
    hang.set()


def test_close_cuts_a_reconnect_backoff_short() -> None:
    def refuse() -> FrameReader:
        raise SourceDisconnected("connection refused")

    cfg = config(reconnect_backoff_s=30.0, reconnect_backoff_cap_s=30.0, max_reconnects=None)
    source = VideoSource(cfg, reader_factory=refuse)
    threading.Timer(0.3, source.close).start()
    assert list(source) == []
    assert source.stats["connect_failures"] == 1  # no second try: the 30 s wait was cut short


def test_new_frame_size_starts_a_new_batch() -> None:
    factory = scripted(
        FakeReader([0.0, 0.1], then_raise=SourceDisconnected("x"), size=(8, 6)),
        FakeReader([0.0, 0.1, 0.2], size=(16, 12)),
        SourceDisconnected("down"),
    )
    retry = Retry(ConstantBackoff(0.0), attempts=1, sleep=lambda _s: None)
    source = VideoSource(config(batch_frames=8), retry=retry, reader_factory=factory)
    sizes = []
    with pytest.raises(SourceDisconnected, match="down"):
        for batch in source:
            sizes += [batch.frames.shape[1:3]] * len(batch)
    assert sizes == [(6, 8)] * 2 + [(12, 16)] * 3


def test_frame_queue_policies() -> None:
    stop = threading.Event()
    q = FrameQueue(maxsize=2, policy="drop_oldest")
    for i in range(5):
        assert q.put(i, stop)
    assert (q.get(0), q.get(0), q.get(0), q.dropped) == (3, 4, None, 3)
    q = FrameQueue(maxsize=1, policy="block")
    assert q.put(0, stop)
    stop.set()
    assert not q.put(1, stop)  # would block; stop lets the reader go
    assert (q.get(0), q.dropped) == (0, 0)


# -- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "stream_id", "live", "policy"),
    [
        ("/data/videos/lobby cam.mp4", "lobby-cam", False, "block"),
        ("file:///data/door.mkv", "door", False, "block"),
        ("rtsp://admin:secret@10.0.0.7:554/h264/main", "10.0.0.7-554-h264-main", True, "drop_oldest"),
        ("rtsp://:secret@10.0.0.8/live", "10.0.0.8-live", True, "drop_oldest"),  # a password alone
        ("rtsp://cam.local/stream", "cam.local-stream", True, "drop_oldest"),
        ("http://cam.local/video.mjpg", "cam.local-video.mjpg", False, "block"),
    ],
)
def test_config_derives_id_and_liveness(uri: str, stream_id: str, live: bool, policy: str) -> None:
    cfg = SourceConfig(uri=uri)
    assert (cfg.stream_id, cfg.is_live, cfg.queue_policy) == (stream_id, live, policy)
    assert "secret" not in cfg.display_uri and "secret" not in cfg.stream_id
    assert ("***" in cfg.display_uri) == ("secret" in uri)  # masked, not silently dropped


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"uri": "a.mp4", "colour": "red"}, "Extra inputs are not permitted"),
        ({"uri": "a.mp4", "batch_frames": 0}, "greater than or equal to 1"),
        ({"uri": "a.mp4", "rtsp_transport": "http"}, "'tcp' or 'udp'"),
        ({"uri": "a.mp4", "reconnect_backoff_s": 5, "reconnect_backoff_cap_s": 1}, "cap_s=1.0 is below"),
        ({"uri": ""}, "at least 1 character"),
    ],
)
def test_config_rejects(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SourceConfig.model_validate(fields)


def test_config_is_frozen_and_keeps_explicit_id() -> None:
    cfg = SourceConfig(uri="rtsp://cam/s", stream_id="door", live=False, drop_policy="drop_oldest")
    assert (cfg.stream_id, cfg.is_live, cfg.queue_policy) == ("door", False, "drop_oldest")
    with pytest.raises(ValidationError):
        cfg.batch_frames = 3  # type: ignore[misc]
