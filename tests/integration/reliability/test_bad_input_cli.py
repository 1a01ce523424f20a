"""Bad input through the command line: one clear line each, a non-zero exit where it is fatal, and a
bad source never stops a good one in the same run.

What the other suites cover already (not repeated here): a corrupt file beside a good one on Ray
and through ``run`` (``pipeline/test_pipeline.py``), truncated and audio-only files at the decoder
(``unit/sources/test_decode.py``), an image with no face, a missing ``--folder`` and an empty
``enroll`` (``gallery/test_gallery_cli.py``), no sources and duplicate stream ids
(``unit/runtime/test_local_runner.py``), config-file errors (``unit/test_config.py``).

Unreachable network sources stay on loopback: a closed port (refused) and a port that accepts and
never answers (the black hole a non-routable address would be, e.g. ``http://10.255.255.1/``).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from streamproc.cli import main
from streamproc.sources.synth import write_pattern_video

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A loopback port that accepts TCP connections and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@dataclass
class CliRun:
    code: int
    out: str
    err: str


def run_cli(*argv: str) -> CliRun:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return CliRun(code, out.getvalue(), err.getvalue())


# --- bad sources beside a good one: one `streamproc run` ----------------------------------------------
# stream id -> what its line in the summary says (a regular expression)
SOURCE_TABLE = [
    ("empty", r"FAILED: DecodeError: .*empty\.mp4: file is empty \(0 bytes\), not a video$"),
    ("text", r"FAILED: DecodeError: .*notes\.mp4: not a video FFmpeg can read"),
    ("missing", r"FAILED: InputError: .*nothing\.mp4: video file does not exist: check the path$"),
    (
        "refused",
        r"FAILED: SourceDisconnected: rtsp://127\.0\.0\.1:\d+/x: cannot open the stream \(.*refused.*\)$",
    ),
    ("silent", r"FAILED: SourceDisconnected: http://127\.0\.0\.1:\d+/x\.mp4: .*(timed out|stalled)"),
    ("huge", r"frames 4, .* ok$"),  # frames above source.max_width are downscaled, not refused
]


@pytest.fixture(scope="module")
def bad_sources_run(
    gallery: Any, demo_video: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[CliRun, float]]:
    folder = tmp_path_factory.mktemp("bad-sources")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("meeting notes, not a video\n" * 100)
    huge = write_pattern_video(folder / "huge.mp4", width=3840, height=2160, n_frames=4)
    quick = {"open_timeout_s": 2.0, "stall_timeout_s": 2.0}
    with black_hole() as silent:
        sources = [
            {"uri": str(demo_video), "stream_id": "good"},
            {"uri": str(folder / "empty.mp4"), "stream_id": "empty"},
            {"uri": str(folder / "notes.mp4"), "stream_id": "text"},
            {"uri": str(folder / "missing" / "nothing.mp4"), "stream_id": "missing"},
            {"uri": f"rtsp://127.0.0.1:{free_port()}/x", "stream_id": "refused", "max_reconnects": 1,
             "reconnect_backoff_s": 0.1, "reconnect_backoff_cap_s": 0.1, **quick},
            {"uri": f"http://127.0.0.1:{silent}/x.mp4", "stream_id": "silent", **quick},
            {"uri": str(huge), "stream_id": "huge", "max_width": 640},
        ]  # fmt: skip
        sets = [*gallery.overrides(), "sources=" + json.dumps(sources), "embedder.threads=1"]
        sets += ["detect.every_k_frames=2", "aggregate.min_frames=3", "aggregate.n_frames=6"]
        argv = ["run", "--runner", "local"]
        for item in sets:
            argv += ["--set", item]
        started = time.monotonic()
        result = run_cli(*argv)
        yield result, time.monotonic() - started


def summary_line(run: CliRun, stream_id: str) -> str:
    lines = [line for line in run.out.splitlines() if line.startswith(f"  {stream_id}: frames ")]
    assert len(lines) == 1, run.out
    return lines[0]


@pytest.mark.parametrize(("stream_id", "expected"), SOURCE_TABLE, ids=[r[0] for r in SOURCE_TABLE])
def test_each_bad_source_fails_alone_with_one_line(
    bad_sources_run: tuple[CliRun, float], stream_id: str, expected: str
) -> None:
    run, _ = bad_sources_run
    assert re.search(expected, summary_line(run, stream_id)), summary_line(run, stream_id)


def test_the_good_source_is_decided_and_the_exit_code_says_some_failed(
    bad_sources_run: tuple[CliRun, float], demo_people: set[str]
) -> None:
    run, wall = bad_sources_run
    summary = "\n".join(line for line in run.out.splitlines() if line.startswith("  "))
    print(f"\nrun with 1 good and {len(SOURCE_TABLE)} other sources: {wall:.1f}s, exit {run.code}\n{summary}")
    assert run.code == 1
    assert summary_line(run, "good").endswith(" ok")
    decided = {line.split()[3] for line in run.out.splitlines() if line.startswith("good  track ")}
    assert demo_people <= decided, run.out
    assert "Traceback" not in run.err


# --- fatal: refused before anything starts --------------------------------------------------------------
FATAL_TABLE = [
    (["run", "--source", "a.mp4", "--set", "runtime.bogus=1"], r"runtime\.bogus: unknown key"),
    (["run", "--set", 'sources=[{"uri": "a.mp4", "fps": 5}]'], r"sources\.0\.fps: unknown key"),
    (["run", "--source", "a.mp4", "--set", "detect.every_k_frames=0"], r"detect\.every_k_frames: .*greater than or equal to 1"),
    (["run", "--source", "a.mp4", "--set", "metrics.port=70000"], r"metrics\.port: .*less than or equal to 65535"),
    (["run", "--set", 'sources=[{"uri": "a.mp4", "reconnect_backoff_s": 5, "reconnect_backoff_cap_s": 1}]'], r"raise the cap"),
    (["run", "--source", "a.mp4", "--set", "gallery.url=http://x"], r"gallery\.url: .*redis://"),
    (["enroll", "--name", "x", "notes.txt", "--set", "detector.kind=nope"], r"detector\.kind"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "message"), FATAL_TABLE, ids=[f"fatal{i}" for i in range(len(FATAL_TABLE))])
def test_bad_config_is_refused_in_one_line(argv: list[str], message: str) -> None:
    run = run_cli(*argv)
    assert run.code == 2
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid config: "), run.err
    assert re.search(message, lines[0]), lines[0]


# --- enroll: each bad image is rejected by name, the command goes on ----------------------------------------
def _huge(folder: Path) -> Path:  # 8000x8000, no face: the detector still scans all of it
    path = folder / "huge.jpg"
    cv2.imwrite(str(path), np.full((8000, 8000, 3), 120, np.uint8))
    return path


def _text(folder: Path) -> Path:
    path = folder / "photo.jpg"
    path.write_text("not an image")
    return path


def _missing(folder: Path) -> Path:
    return folder / "gone.jpg"


def _empty(folder: Path) -> Path:
    path = folder / "empty.jpg"
    path.write_bytes(b"")
    return path


def _not_an_image_type(folder: Path) -> Path:
    path = folder / "notes.txt"
    path.write_text("hello")
    return path


ENROLL_TABLE = [
    pytest.param(_huge, 1, r"rejected .*huge\.jpg: no face found", id="huge-8000x8000"),
    pytest.param(_text, 1, r"rejected .*photo\.jpg: .*not a readable image", id="not-an-image"),
    pytest.param(_missing, 1, r"rejected .*gone\.jpg: no such file", id="missing"),
    pytest.param(_empty, 1, r"rejected .*empty\.jpg: .*empty", id="zero-bytes"),
    pytest.param(_not_an_image_type, 2, r"^error: not an image file type: .*notes\.txt$", id="txt-file"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "code", "message"), ENROLL_TABLE)
def test_enroll_bad_image(
    make: Callable[[Path], Path],
    code: int,
    message: str,
    tmp_path: Path,
    redis_server: Any,
    mtcnn_weights_dir: Path,
    facenet_keras_h5: Path,
) -> None:
    image = make(tmp_path)
    run = run_cli("enroll", "--name", "someone", str(image), "--set", f"gallery.url={redis_server.url}")
    assert run.code == code, run.err[-2000:]
    assert "Traceback" not in run.err
    assert re.search(message, run.err, re.MULTILINE), run.err[-2000:]
