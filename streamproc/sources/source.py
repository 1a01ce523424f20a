"""``VideoSource``: a file or a live camera as an iterator of ``FrameBatch``.

A reader thread per connection decodes into a bounded queue; the consumer batches from that queue.

- **Watchdog.** FFmpeg's socket timeout and PyAV's interrupt callback bound every blocking read
  (see ``decode``). On top of that the consumer gives up on a connection that has decoded nothing for
  ``stall_timeout_s`` (``open_timeout_s`` while opening) and raises or reconnects; a reader thread
  stuck inside FFmpeg is abandoned, it cannot hang the consumer.
- **Reconnects** (live sources only) go through the injected ``Retry`` policy: a lost stream, a stall
  or the end of a live stream leads to a new connection; the policy's attempts bound how many
  *consecutive* failed connects are tolerated (every successful connect starts a fresh count).
- **Time** never goes back: after a reconnect the stream's times are shifted to start after the last
  emitted frame plus the wall-clock length of the outage.
- **Slow consumers**: ``drop_policy="drop_oldest"`` (the default for live sources) keeps the newest
  ``queue_frames`` frames and counts the rest in ``stats["frames_dropped"]``; ``"block"`` (files)
  makes the reader wait.

Batches hold up to ``batch_frames`` frames of one size. A file fills every batch and marks its last
one ``end_of_stream=True``; a live source hands out what is ready without waiting for a full batch.
A file read with ``live=True`` starts over when it ends (times keep increasing), as fast as it
decodes: a stand-in camera for demos.

Example:
    >>> import tempfile, pathlib
    >>> from streamproc.sources.synth import write_pattern_video
    >>> path = write_pattern_video(pathlib.Path(tempfile.mkdtemp()) / "p.mp4", n_frames=10)
    >>> with VideoSource(SourceConfig(uri=str(path), batch_frames=4)) as source:
    ...     [(len(b), b.end_of_stream) for b in source]
    [(4, False), (4, False), (2, True)]
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from streamproc.errors import DecodeError, SourceDisconnected
from streamproc.retry import ExponentialBackoff, Retry
from streamproc.sources.config import SourceConfig, is_network_uri
from streamproc.sources.decode import DecodedFrame, Decoder, PtsClock
from streamproc.types import FrameBatch

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often a waiting consumer looks at the watchdog and at close()
GRACE_S = 0.5  # let FFmpeg's own timeout (clearer message) fire before the watchdog does


class FrameReader(Protocol):
    """What ``VideoSource`` needs from a decoder (``decode.Decoder``; fakes in tests)."""

    fps: float
    frames_decoded: int
    frames_skipped: int
    decode_errors: int
    last_progress: float

    def __iter__(self) -> Iterator[DecodedFrame]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class _End:
    error: Exception | None = None


class FrameQueue:
    """Bounded FIFO of frames with an explicit full-queue policy; end markers are never dropped.

    Example:
        >>> q = FrameQueue(maxsize=2, policy="drop_oldest")
        >>> for i in range(4):
        ...     _ = q.put(i, threading.Event())
        >>> q.get(0.0), q.get(0.0), q.dropped
        (2, 3, 2)
    """

    def __init__(self, maxsize: int, policy: Literal["block", "drop_oldest"]) -> None:
        self.maxsize = maxsize
        self.policy = policy
        self.dropped = 0
        self._items: deque[object] = deque()
        self._cond = threading.Condition()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: object, stop: threading.Event) -> bool:
        """Add an item; False when ``stop`` was set while waiting for room (item not added)."""
        with self._cond:
            if not isinstance(item, _End):
                while len(self._items) >= self.maxsize:
                    if self.policy == "drop_oldest":
                        self._items.popleft()
                        self.dropped += 1
                    elif stop.is_set():
                        return False
                    else:
                        self._cond.wait(POLL_S)
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self, timeout: float) -> object | None:
        """The oldest item, or None when nothing came within ``timeout`` seconds."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item


class _Connection:
    """One reader thread: open a decoder, push its frames into a queue, then an end marker."""

    def __init__(self, open_reader: Callable[[], FrameReader], queue: FrameQueue, name: str) -> None:
        self.queue = queue
        self.reader: FrameReader | None = None
        self.started = time.monotonic()
        self._last_put = self.started
        self._open_reader = open_reader
        self._stop = threading.Event()
        self.retired = False
        self.thread = threading.Thread(target=self._run, name=f"video-reader-{name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            reader = self._open_reader()
        except Exception as exc:
            self.queue.put(_End(exc), self._stop)
            return
        self.reader = reader
        try:
            for frame in reader:
                if self._stop.is_set() or not self.queue.put(frame, self._stop):
                    return
                self._last_put = time.monotonic()
            self.queue.put(_End(), self._stop)
        except Exception as exc:
            self.queue.put(_End(exc), self._stop)
        finally:
            reader.close()

    @property
    def opened(self) -> bool:
        return self.reader is not None

    def last_progress(self) -> float:
        """Monotonic time the reader last showed life: opened, decoded or handed over a frame."""
        decoded = self.reader.last_progress if self.reader is not None else self.started
        return max(decoded, self._last_put)

    def counters(self) -> dict[str, int]:
        r = self.reader
        return {
            "frames_decoded": r.frames_decoded if r else 0,
            "frames_skipped": r.frames_skipped if r else 0,
            "decode_errors": r.decode_errors if r else 0,
            "frames_dropped": self.queue.dropped,
        }

    def abandon(self, join_s: float = 0.0) -> None:
        """Ask the reader to stop; it closes its decoder in its own thread when FFmpeg returns."""
        self._stop.set()
        if join_s > 0:
            self.thread.join(join_s)


class _Closed(Exception):
    pass


class VideoSource:
    """Frames of one video file or live stream as ``FrameBatch`` es; see the module docstring.

    ``retry`` decides how reconnects of a live source wait and when they give up; by default an
    ``ExponentialBackoff(reconnect_backoff_s, reconnect_backoff_cap_s)`` with
    ``max_reconnects + 1`` attempts (forever when ``max_reconnects`` is None). Files never reconnect.
    ``reader_factory`` replaces the PyAV decoder (tests).

    Example:
        >>> source = VideoSource(SourceConfig(uri="rtsp://127.0.0.1:8554/stream", max_reconnects=3))
        >>> source.stats["reconnects"], source.config.is_live
        (0, True)
        >>> source.close()
    """

    def __init__(
        self,
        config: SourceConfig,
        retry: Retry | None = None,
        *,
        reader_factory: Callable[[], FrameReader] | None = None,
    ) -> None:
        self.config = config
        self.live = config.is_live
        self._closing = threading.Event()
        self.retry = retry if retry is not None else self._default_retry(config)
        self._reader_factory = reader_factory or self._open_decoder
        self._conn: _Connection | None = None
        self._lock = threading.Lock()
        self._timeline = PtsClock(frame_period=1.0 / 25)
        self._last_frame_wall: float | None = None
        self._totals = dict.fromkeys(
            ("frames_decoded", "frames_skipped", "decode_errors", "frames_dropped"), 0
        )
        self._events = {"frames_emitted": 0, "reconnects": 0, "connect_failures": 0}

    def _default_retry(self, config: SourceConfig) -> Retry:
        if not config.is_live:
            return Retry(attempts=1)
        attempts = None if config.max_reconnects is None else config.max_reconnects + 1
        backoff = ExponentialBackoff(base=config.reconnect_backoff_s, cap=config.reconnect_backoff_cap_s)
        # close() cuts a backoff wait short
        return Retry(backoff=backoff, attempts=attempts, sleep=self._wait_unless_closed)

    def _wait_unless_closed(self, seconds: float) -> None:
        self._closing.wait(seconds)

    def _open_decoder(self) -> FrameReader:
        c = self.config
        return Decoder(
            c.uri,
            rtsp_transport=c.rtsp_transport,
            open_timeout_s=c.open_timeout_s,
            read_timeout_s=c.stall_timeout_s,
            sample_fps=c.sample_fps,
            max_width=c.max_width,
        )

    @property
    def stats(self) -> dict[str, int]:
        """frames_decoded, frames_skipped (sampling), frames_dropped (slow consumer), frames_emitted,
        decode_errors, reconnects (successful, after a loss), connect_failures (failed opens)."""
        out = dict(self._totals)
        if self._conn is not None:
            for key, value in self._conn.counters().items():
                out[key] += value
        out.update(self._events)
        return out

    # -- connections ---------------------------------------------------------------------------

    def _retire(self, conn: _Connection | None, join_s: float = 0.0) -> None:
        with self._lock:
            if conn is None or conn.retired:
                return
            conn.retired = True
            for key, value in conn.counters().items():
                self._totals[key] += value
            if self._conn is conn:
                self._conn = None
        conn.abandon(join_s)

    def _next(self, conn: _Connection) -> DecodedFrame | None:
        """The next frame of ``conn``; None at its end. Raises its error, or SourceDisconnected on a stall."""
        while True:
            item = conn.queue.get(POLL_S)
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return None
            if item is not None:
                assert isinstance(item, DecodedFrame)
                return item
            if self._closing.is_set():
                raise _Closed
            limit = self.config.stall_timeout_s if conn.opened else self.config.open_timeout_s
            idle = time.monotonic() - conn.last_progress()
            if idle > limit + GRACE_S:
                what = "no frame" if conn.opened else "could not open"
                raise SourceDisconnected(
                    f"{self.config.display_uri}: {what} for {idle:.1f}s (limit {limit:g}s): source stalled"
                )

    def _connect(self) -> tuple[_Connection, DecodedFrame]:
        if self._closing.is_set():
            raise _Closed
        queue = FrameQueue(self.config.queue_frames, self.config.queue_policy)
        conn = _Connection(self._reader_factory, queue, self.config.stream_id)
        try:
            first = self._next(conn)
            if first is None:
                raise (SourceDisconnected if self.live else DecodeError)(
                    f"{self.config.display_uri}: the stream ended before its first frame"
                    + ("" if self.live else " (no decodable video frames)")
                )
        except _Closed:
            self._retire(conn)
            raise
        except Exception:
            self._events["connect_failures"] += 1
            self._retire(conn)
            raise
        assert conn.reader is not None
        self._timeline.frame_period = 1.0 / conn.reader.fps
        self._conn = conn
        return conn, first

    def _reconnect(self, reason: Exception) -> tuple[_Connection, DecodedFrame]:
        level = logging.WARNING if is_network_uri(self.config.uri) else logging.INFO  # a looping file: info
        log.log(level, "source %s lost (%s); reconnecting", self.config.stream_id, reason)
        conn, first = self.retry.call(self._connect)
        self._events["reconnects"] += 1
        gap = 0.0 if self._last_frame_wall is None else time.monotonic() - self._last_frame_wall
        self._timeline.discontinuity(gap)
        log.info("%s: reconnected after %.1fs", self.config.stream_id, gap)
        return conn, first

    def _frames(self) -> Iterator[DecodedFrame]:
        """Frames on one increasing timeline, across reconnects; ends at the end of a file or on close()."""
        try:
            conn, frame = self.retry.call(self._connect)
            while True:
                self._last_frame_wall = time.monotonic()
                self._events["frames_emitted"] += 1
                yield frame._replace(pts=self._timeline(frame.pts))
                try:
                    next_frame = self._next(conn)
                    if next_frame is not None:
                        frame = next_frame
                        continue
                    if not self.live:
                        return
                    lost: Exception = SourceDisconnected(f"{self.config.display_uri}: the stream ended")
                except SourceDisconnected as exc:
                    if not self.live:
                        raise
                    lost = exc
                self._retire(conn)
                conn, frame = self._reconnect(lost)
        except _Closed:
            return
        finally:
            self._retire(self._conn)

    def _ready(self) -> bool:
        return self._conn is not None and len(self._conn.queue) > 0

    # -- public --------------------------------------------------------------------------------

    def _batch(self, frames: list[DecodedFrame], end: bool) -> FrameBatch:
        return FrameBatch(
            stream_id=self.config.stream_id,
            frames=np.stack([f.image for f in frames]),
            pts=np.array([f.pts for f in frames], np.float64),
            end_of_stream=end,
        )

    def __iter__(self) -> Iterator[FrameBatch]:
        size = self.config.batch_frames
        frames = self._frames()
        error: Exception | None = None

        def pull() -> DecodedFrame | None:
            """The next frame, or None at the end; an error is kept until the frames before it are out."""
            nonlocal error
            if error is not None:
                return None
            try:
                return next(frames, None)
            except Exception as exc:
                error = exc
                return None

        pending: DecodedFrame | None = None
        while True:
            first = pending if pending is not None else pull()
            pending = None
            if first is None:
                break
            batch, exhausted = [first], False
            while len(batch) < size and (not self.live or self._ready()):
                nxt = pull()
                if nxt is None:
                    exhausted = True
                elif nxt.image.shape != first.image.shape:
                    pending = nxt  # a new size (after a reconnect): it starts the next batch
                else:
                    batch.append(nxt)
                    continue
                break
            if not self.live and not exhausted and pending is None:
                pending = pull()  # look ahead so the last batch of a file is marked
                exhausted = pending is None
            yield self._batch(batch, end=exhausted and not self.live and error is None)
            if exhausted:
                break
        if error is not None:
            raise error

    def close(self) -> None:
        """Stop reading; waits up to ``stall_timeout_s`` for the reader thread to let go of the stream."""
        self._closing.set()
        self._retire(self._conn, join_s=self.config.stall_timeout_s)

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
