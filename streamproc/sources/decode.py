"""PyAV adapter: open a video file or an RTSP URL and iterate RGB frames with times in seconds.

Nothing outside this module touches PyAV objects. A ``Decoder`` is one connection: it opens on
construction and its iterator ends when the file (or the network stream) ends. Reconnecting,
batching and the stall watchdog live in ``streamproc.sources.source``.

Errors (from ``streamproc.errors``):

- a missing path, a directory or an unreadable file: ``InputError`` naming the path;
- an empty file, a file that is not video (text, a truncated mp4 whose index was lost, audio only):
  ``DecodeError`` naming the path and the reason; never retried;
- a network source that cannot be reached, times out or drops: ``SourceDisconnected`` (retryable);
  refused credentials: ``SourceError`` (not retryable).

A truncated file whose index survives (mp4 written with faststart, mkv, raw h264) yields the frames
whose bytes are present and then ends normally (no exception); a packet that fails to decode is
skipped and counted in ``decode_errors``, and 50 in a row end the file with ``DecodeError``.

Times: ``frame.time`` when FFmpeg has one; otherwise (raw h264, some cameras) the previous time plus
one frame period from the stream's average rate, i.e. ``index / fps`` when no frame has a time.
A time that goes back is shifted forward so that times strictly increase.

Example:
    >>> import tempfile, pathlib
    >>> from streamproc.sources.synth import write_pattern_video
    >>> path = write_pattern_video(pathlib.Path(tempfile.mkdtemp()) / "p.mp4", n_frames=10, fps=10)
    >>> with Decoder(str(path), sample_fps=5) as dec:
    ...     [round(f.pts, 2) for f in dec]
    [0.0, 0.2, 0.4, 0.6, 0.8]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import av
import av.error
import numpy as np

from streamproc.errors import DecodeError, InputError, SourceDisconnected, SourceError, StreamprocError
from streamproc.sources.config import is_network_uri, redact_uri, uri_scheme

log = logging.getLogger(__name__)

DEFAULT_FPS = 25.0
MAX_CONSECUTIVE_DECODE_ERRORS = 50


class DecodedFrame(NamedTuple):
    image: np.ndarray  # (H, W, 3) uint8 RGB
    pts: float  # seconds, strictly increasing within one Decoder
    number: int  # decoded-frame counter of this Decoder (sampled-out frames count too)


class PtsClock:
    """Turn raw frame times (possibly missing, possibly going back) into strictly increasing seconds.

    Example:
        >>> clock = PtsClock(frame_period=0.5)
        >>> [clock(t) for t in (None, None, 3.0, 1.0, 1.5)]
        [0.0, 0.5, 3.0, 3.5, 4.0]
    """

    def __init__(self, frame_period: float) -> None:
        if frame_period <= 0:
            raise ValueError(f"frame_period: expected > 0, got {frame_period}")
        self.frame_period = frame_period
        self.offset = 0.0
        self.last: float | None = None
        self._min_gap = 0.0

    def discontinuity(self, min_gap: float = 0.0) -> None:
        """The next frame comes after a break: keep it at least ``min_gap`` seconds after the last."""
        self._min_gap = max(min_gap, self.frame_period)

    def __call__(self, raw: float | None) -> float:
        if self.last is None:
            out = 0.0 if raw is None else raw + self.offset
        elif raw is None:
            out = self.last + max(self.frame_period, self._min_gap)
        else:
            out = raw + self.offset
            floor = self.last + (self._min_gap if self._min_gap else 0.0)
            if out <= floor:
                self.offset = floor + (0.0 if self._min_gap else self.frame_period) - raw
                out = raw + self.offset
        self._min_gap = 0.0
        self.last = out
        return out


class FpsSampler:
    """Keep about ``fps`` frames per second of stream time, on a fixed grid that restarts after gaps.

    Example:
        >>> keep = FpsSampler(fps=2.0)
        >>> [t for t in [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 5.0, 5.25, 5.5] if keep(t)]
        [0.0, 0.5, 1.0, 5.0, 5.5]
    """

    def __init__(self, fps: float, tolerance: float = 1e-3) -> None:
        if fps <= 0:
            raise ValueError(f"fps: expected > 0, got {fps}")
        self.period = 1.0 / fps
        self.tolerance = tolerance
        self._next: float | None = None

    def __call__(self, pts: float) -> bool:
        if self._next is not None and pts < self._next - self.tolerance:
            return False
        nxt = pts + self.period if self._next is None else self._next + self.period
        if nxt <= pts + self.tolerance:  # far behind (a gap in the stream): restart the grid here
            nxt = pts + self.period
        self._next = nxt
        return True


def scaled_size(width: int, height: int, max_width: int | None) -> tuple[int, int]:
    """Output (width, height): unchanged, or shrunk to ``max_width`` keeping the aspect, sides even."""
    if max_width is None or width <= max_width:
        return width, height
    new_height = max(2, round(height * max_width / width / 2) * 2)
    return max_width - max_width % 2, new_height


def _describe(exc: BaseException) -> str:
    if isinstance(exc, av.error.ExitError):  # PyAV's interrupt callback: our timeout ran out
        return "timed out"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text)


def _open_error(exc: Exception, uri: str, network: bool) -> StreamprocError:
    """Map what av.open raised onto our exception tree, with a message that names the input."""
    shown = redact_uri(uri)
    reason = _describe(exc)
    if network:
        if isinstance(exc, av.error.HTTPUnauthorizedError | av.error.HTTPForbiddenError):
            return SourceError(f"{shown}: the server refused access ({reason}): check the credentials")
        return SourceDisconnected(f"{shown}: cannot open the stream ({reason})")
    if isinstance(exc, FileNotFoundError | IsADirectoryError | PermissionError | NotADirectoryError):
        return InputError(f"{shown}: cannot read the video file ({reason}): check the path")
    return DecodeError(
        f"{shown}: not a video FFmpeg can read ({reason}); a truncated or partly copied "
        "recording often loses its index: re-copy or re-encode the file"
    )


def _check_file(path: str) -> None:
    p = Path(urlsplit(path).path if uri_scheme(path) == "file" else path)
    if not p.exists():
        raise InputError(f"{p}: video file does not exist: check the path")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected a video file")
    if p.stat().st_size == 0:
        raise DecodeError(f"{p}: file is empty (0 bytes), not a video")


def open_options(uri: str, rtsp_transport: str, stall_timeout_s: float) -> dict[str, str]:
    """FFmpeg demuxer options for ``uri``.

    RTSP: ``rtsp_transport`` picks TCP (RTP interleaved in the RTSP connection) or UDP, and
    ``timeout`` is the socket I/O timeout in microseconds (FFmpeg 5+; the older ``stimeout`` is gone),
    which bounds the connect and every read on the RTSP socket. PyAV's own ``timeout`` argument adds
    an interrupt callback on top (see ``Decoder``).
    """
    scheme = uri_scheme(uri)
    micros = str(int(stall_timeout_s * 1_000_000))
    if scheme in ("rtsp", "rtsps"):
        return {"rtsp_transport": rtsp_transport, "timeout": micros, "allowed_media_types": "video"}
    if scheme in ("http", "https", "tcp", "rtmp", "rtmps", "srt", "udp", "rtp"):
        return {"rw_timeout": micros}
    return {}


class Decoder:
    """One open video: iterate ``DecodedFrame`` (RGB, seconds), sampled and downscaled.

    ``open_timeout_s`` bounds opening (connect and probe), ``read_timeout_s`` bounds each blocking
    read afterwards; both through FFmpeg options and PyAV's interrupt callback, so a dead network
    source raises ``SourceDisconnected`` instead of hanging. ``last_progress`` is the monotonic time of
    the last decoded frame (or of the open), for a watchdog in another thread.
    """

    def __init__(
        self,
        uri: str,
        *,
        rtsp_transport: str = "tcp",
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
        sample_fps: float | None = None,
        max_width: int | None = None,
    ) -> None:
        self.uri = uri
        self.network = is_network_uri(uri)
        self.frames_decoded = 0
        self.frames_skipped = 0
        self.decode_errors = 0
        self._bad_in_a_row = 0
        self.last_progress = time.monotonic()
        if not self.network:
            _check_file(uri)
        try:
            self._container: Any = av.open(
                uri,
                container_options=open_options(uri, rtsp_transport, read_timeout_s),
                timeout=(open_timeout_s, read_timeout_s),
            )
        except (av.error.FFmpegError, OSError) as exc:
            raise _open_error(exc, uri, self.network) from exc
        if not self._container.streams.video:
            self._container.close()
            raise DecodeError(f"{redact_uri(uri)}: has no video stream")
        self._stream = self._container.streams.video[0]
        ctx = self._stream.codec_context
        if self.network:
            # frame threads with a short queue: one frame of latency. Not SLICE: FFmpeg 8's h264
            # slice threading mis-decodes the repeated IDR an RTSP session can start with.
            ctx.thread_type, ctx.thread_count = "FRAME", 2
        else:
            ctx.thread_type = "AUTO"
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else DEFAULT_FPS
        self.source_size = (int(ctx.width), int(ctx.height))
        self.max_width = max_width
        self._clock = PtsClock(1.0 / self.fps)
        self._sampler = FpsSampler(sample_fps, tolerance=0.25 / self.fps) if sample_fps else None
        self.last_progress = time.monotonic()

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def _where(self) -> str:
        return redact_uri(self.uri)

    def _read_failed(self, exc: BaseException) -> StreamprocError:
        reason = _describe(exc)
        if self.network:
            return SourceDisconnected(f"{self._where()}: stream read failed ({reason})")
        return DecodeError(
            f"{self._where()}: reading the file failed after frame {self.frames_decoded} ({reason})"
        )

    def _packets(self) -> Iterator[Any]:
        demux = self._container.demux(self._stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                return
            except av.error.EOFError:
                return
            except (av.error.FFmpegError, OSError) as exc:
                raise self._read_failed(exc) from exc
            yield packet

    def _decode(self, packet: Any) -> list[Any]:
        try:
            frames = self._stream.decode(packet)
        except av.error.InvalidDataError as exc:  # one corrupt packet: skip it
            self.decode_errors += 1
            self._bad_in_a_row += 1
            log.debug("%s: skipping undecodable packet: %s", self._where(), exc)
            if self._bad_in_a_row >= MAX_CONSECUTIVE_DECODE_ERRORS:
                raise self._read_failed(exc) from exc
            return []
        except av.error.FFmpegError as exc:
            raise self._read_failed(exc) from exc
        self._bad_in_a_row = 0
        return list(frames)

    def _to_rgb(self, frame: Any) -> np.ndarray:
        width, height = scaled_size(frame.width, frame.height, self.max_width)
        if (width, height) == (frame.width, frame.height):
            return np.asarray(frame.to_ndarray(format="rgb24"))
        small = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA")
        return np.asarray(small.to_ndarray())

    def __iter__(self) -> Iterator[DecodedFrame]:
        for packet in self._packets():
            for frame in self._decode(packet):
                index = self.frames_decoded
                self.frames_decoded += 1
                self.last_progress = time.monotonic()
                pts = self._clock(frame.time)
                if self._sampler is not None and not self._sampler(pts):
                    self.frames_skipped += 1
                    continue
                yield DecodedFrame(self._to_rgb(frame), pts, index)
