"""The PyAV adapter on small videos written by ``synth``: frames, times, sampling, scaling, bad input."""

from __future__ import annotations

import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamproc.errors import DecodeError, InputError, StreamprocError
from streamproc.sources.decode import Decoder, FpsSampler, PtsClock, open_options, scaled_size
from streamproc.sources.synth import moving_pattern, square_x, write_pattern_video, write_video


def make_video(tmp_path: Path, name: str = "v.mp4", **kwargs: Any) -> Path:
    return write_pattern_video(tmp_path / name, **kwargs)


def decode_all(path: Path, **kwargs: Any) -> tuple[np.ndarray, np.ndarray, Decoder]:
    with Decoder(str(path), **kwargs) as dec:
        frames = list(dec)
    return np.stack([f.image for f in frames]), np.array([f.pts for f in frames]), dec


def square_columns(images: np.ndarray, row: int) -> list[int]:
    """Left column of the bright square in each frame (see synth.moving_pattern)."""
    return [int(np.argmax(img[row].min(axis=-1) > 200)) for img in images]


@pytest.mark.parametrize("name", ["v.mp4", "v.mkv"])
def test_frames_and_times_match_what_was_written(tmp_path: Path, name: str) -> None:
    path = make_video(tmp_path, name, width=160, height=120, n_frames=20, fps=10)
    images, pts, dec = decode_all(path)
    assert images.shape == (20, 120, 160, 3) and images.dtype == np.uint8
    assert np.allclose(pts, np.arange(20) / 10)
    assert square_columns(images, row=60) == [square_x(i, 160, 30) for i in range(20)]
    assert (dec.frames_decoded, dec.frames_skipped, dec.decode_errors, dec.fps) == (20, 0, 0, 10.0)


def test_colours_survive_as_rgb(tmp_path: Path) -> None:
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 220
    path = write_video(tmp_path / "red.mp4", [red] * 3, fps=5)
    images, _, _ = decode_all(path)
    r, g, b = images[0, 32, 32].astype(int)
    assert r > 180 and g < 40 and b < 40


@pytest.mark.parametrize(
    ("fps", "sample_fps", "n_frames", "expected"),
    [
        (25, 5, 50, 10),
        (30, 12, 60, 24),
        (10, 3, 30, 9),
        (25, 25, 25, 25),
        (10, 100, 20, 20),  # asking for more than the stream has keeps every frame
    ],
)
def test_sampling_keeps_about_sample_fps(
    tmp_path: Path, fps: int, sample_fps: float, n_frames: int, expected: int
) -> None:
    path = make_video(tmp_path, width=64, height=48, n_frames=n_frames, fps=fps)
    _, pts, dec = decode_all(path, sample_fps=sample_fps)
    assert abs(len(pts) - expected) <= 1, pts
    assert dec.frames_decoded == n_frames and dec.frames_skipped == n_frames - len(pts)
    assert np.diff(pts).min() >= 1 / sample_fps - 1 / fps  # on the grid, within one source frame


def test_missing_times_are_synthesised_from_the_frame_rate(tmp_path: Path) -> None:
    path = make_video(tmp_path, "raw.h264", width=64, height=48, n_frames=12, fps=25)  # no timestamps
    _, pts, _ = decode_all(path)
    assert np.allclose(pts, np.arange(12) / 25)


@pytest.mark.parametrize(
    ("max_width", "expected_hw"),
    [(80, (60, 80)), (100, (76, 100)), (160, (120, 160)), (None, (120, 160)), (400, (120, 160))],
)
def test_downscale_keeps_aspect(tmp_path: Path, max_width: int | None, expected_hw: tuple[int, int]) -> None:
    path = make_video(tmp_path, width=160, height=120, n_frames=3)
    images, _, _ = decode_all(path, max_width=max_width)
    assert images.shape[1:3] == expected_hw


@pytest.mark.parametrize(
    ("size", "max_width", "expected"),
    [((1920, 1080), 640, (640, 360)), ((1920, 1080), 641, (640, 360)), ((100, 10), 20, (20, 2))],
)
def test_scaled_size(size: tuple[int, int], max_width: int, expected: tuple[int, int]) -> None:
    assert scaled_size(*size, max_width) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([0.0, 0.1, 0.2], [0.0, 0.1, 0.2]),
        ([None, None, None], [0.0, 0.1, 0.2]),
        ([5.0, None, 5.3], [5.0, 5.1, 5.3]),
        ([0.0, 0.1, 0.1, 0.2], [0.0, 0.1, 0.2, 0.3]),  # a repeated time is pushed forward
        ([1.0, 1.1, 0.0, 0.1], [1.0, 1.1, 1.2, 1.3]),  # a restart keeps the spacing after the jump
    ],
)
def test_pts_clock_is_strictly_increasing(raw: list[float | None], expected: list[float]) -> None:
    clock = PtsClock(frame_period=0.1)
    assert np.allclose([clock(t) for t in raw], expected)


def test_pts_clock_discontinuity_leaves_a_gap() -> None:
    clock = PtsClock(frame_period=0.1)
    out = [clock(0.0), clock(0.1)]
    clock.discontinuity(2.0)
    out += [clock(0.0), clock(0.1)]
    assert np.allclose(out, [0.0, 0.1, 2.1, 2.2])


@pytest.mark.parametrize(
    ("fps", "times", "kept"),
    [
        (2.0, [0.0, 0.25, 0.5, 0.75, 1.0], [0.0, 0.5, 1.0]),
        (2.0, [0.0, 0.3, 0.6, 0.9, 1.2], [0.0, 0.6, 1.2]),
        (2.0, [0.0, 0.25, 10.0, 10.25, 10.5], [0.0, 10.0, 10.5]),  # the grid restarts after a gap
        (100.0, [0.0, 0.04, 0.08], [0.0, 0.04, 0.08]),
    ],
)
def test_fps_sampler(fps: float, times: list[float], kept: list[float]) -> None:
    keep = FpsSampler(fps)
    assert [t for t in times if keep(t)] == kept


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            "rtsp://cam/stream",
            {"rtsp_transport": "tcp", "timeout": "2500000", "allowed_media_types": "video"},
        ),
        ("http://cam/video.mjpg", {"rw_timeout": "2500000"}),
        ("/videos/a.mp4", {}),
    ],
)
def test_open_options(uri: str, expected: dict[str, str]) -> None:
    assert open_options(uri, "tcp", 2.5) == expected


# -- bad input ---------------------------------------------------------------------------------


def _zero_bytes(tmp_path: Path) -> Path:
    path = tmp_path / "empty.mp4"
    path.touch()
    return path


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    return path


def _truncated_mp4(tmp_path: Path) -> Path:
    """An mp4 cut in half; its index (moov atom, written last) is gone."""
    full = make_video(tmp_path, "full.mp4", n_frames=30)
    path = tmp_path / "truncated.mp4"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    return path


def _audio_only(tmp_path: Path) -> Path:
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(np.zeros(8000, np.int16).tobytes())
    return path


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nowhere" / "missing.mp4"


def _directory(tmp_path: Path) -> Path:
    return tmp_path


@pytest.mark.parametrize(
    ("make_input", "error", "message"),
    [
        (_zero_bytes, DecodeError, "empty"),
        (_text_file, DecodeError, "not a video"),
        (_truncated_mp4, DecodeError, "truncated"),
        (_audio_only, DecodeError, "no video stream"),
        (_missing, InputError, "does not exist"),
        (_directory, InputError, "directory"),
    ],
)
def test_bad_input_names_the_file(
    tmp_path: Path, make_input: Callable[[Path], Path], error: type[StreamprocError], message: str
) -> None:
    path = make_input(tmp_path)
    with pytest.raises(error, match=message) as caught:
        Decoder(str(path))
    assert str(path) in str(caught.value)
    assert not caught.value.retryable


def test_truncated_file_with_its_index_up_front_yields_what_it_has(tmp_path: Path) -> None:
    full = write_video(tmp_path / "full.mp4", moving_pattern(160, 120, 40), fps=25, faststart=True, crf=10)
    path = tmp_path / "cut.mp4"
    path.write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 3])
    images, pts, _ = decode_all(path)
    assert 0 < len(images) < 40
    assert np.allclose(pts, np.arange(len(images)) / 25)


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        ([np.zeros((10, 10), np.uint8)], "expected \\(H, W, 3\\)"),
        ([np.zeros((11, 10, 3), np.uint8)], "even sides"),
        ([np.zeros((10, 10, 3), np.uint8), np.zeros((12, 10, 3), np.uint8)], "expected size"),
        ([], "no frames"),
    ],
)
def test_write_video_rejects_bad_frames(tmp_path: Path, frames: list[np.ndarray], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        write_video(tmp_path / "x.mp4", frames, fps=10)
