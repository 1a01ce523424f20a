"""Write small test videos from numpy frames with PyAV and libx264.

Used by tests (decode, RTSP) and by the demo to synthesise footage; nothing here reads video.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "pattern.mp4"
    >>> write_video(path, moving_pattern(64, 48, n_frames=5), fps=10).name
    'pattern.mp4'
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = ["moving_pattern", "write_pattern_video", "write_video"]


def _check_frame(frame: np.ndarray, size: tuple[int, int] | None, index: int) -> tuple[int, int]:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame {index}: expected (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
    height, width = frame.shape[:2]
    if size is not None and (width, height) != size:
        raise ValueError(f"frame {index}: expected size {size} (width, height), got {(width, height)}")
    if width % 2 or height % 2:
        raise ValueError(f"frame {index}: libx264 with yuv420p needs even sides, got {width}x{height}")
    return width, height


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float,
    size: tuple[int, int] | None = None,
    *,
    crf: int = 23,
    gop: int | None = None,
    faststart: bool = False,
    bframes: int = 0,
) -> Path:
    """Encode RGB frames, each (H, W, 3) uint8, into an H.264 video at ``path``; returns the path.

    ``size`` is (width, height); by default the first frame sets it and every frame must match.
    ``faststart`` moves the mp4 index (moov) before the data, so a truncated file keeps its index.
    Frame ``i`` gets pts ``i / fps``. The container follows the suffix (.mp4, .mkv, .h264 ...).
    """
    if fps <= 0:
        raise ValueError(f"fps: expected > 0, got {fps}")
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    options = {"movflags": "+faststart"} if faststart and path.suffix in (".mp4", ".mov") else {}
    written = 0
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "bf": str(bframes), "preset": "veryfast"}
        if gop is not None:
            stream.codec_context.gop_size = gop
        for index, frame in enumerate(frames):
            width, height = _check_frame(frame, size, index)
            if index == 0:
                stream.width, stream.height = width, height
                size = (width, height)
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = index
            video_frame.time_base = 1 / rate
            container.mux(stream.encode(video_frame))
            written += 1
        if written == 0:
            raise ValueError(f"{path}: no frames to write")
        container.mux(stream.encode(None))
    return path


def moving_pattern(
    width: int, height: int, n_frames: int, *, square: int | None = None
) -> Iterator[np.ndarray]:
    """Frames of a fixed gradient with a white square moving left to right, one step per frame.

    The square's column tells the frame index apart after lossy coding: see ``square_x``.
    """
    side = square or max(8, min(width, height) // 4)
    ys, xs = np.mgrid[0:height, 0:width]
    background = np.stack(
        [(xs * 200 // max(1, width - 1)), (ys * 200 // max(1, height - 1)), np.full_like(xs, 60)], axis=-1
    ).astype(np.uint8)
    top = (height - side) // 2
    for index in range(n_frames):
        frame = background.copy()
        left = square_x(index, width, side)
        frame[top : top + side, left : left + side] = 255
        yield frame


def square_x(index: int, width: int, side: int) -> int:
    """Left column of the moving square in frame ``index`` of ``moving_pattern``."""
    span = max(1, width - side)
    return (index * 2) % span


def write_pattern_video(
    path: str | Path,
    *,
    width: int = 160,
    height: int = 120,
    n_frames: int = 25,
    fps: float = 25.0,
    faststart: bool = False,
) -> Path:
    """Write a ``moving_pattern`` video; a one-liner for tests and benches."""
    return write_video(path, moving_pattern(width, height, n_frames), fps, faststart=faststart)
