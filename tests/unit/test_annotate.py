"""The annotator on hand-placed tracks over a real (synthetic pattern) H.264 file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamproc.annotate import Annotator, label_text
from streamproc.cli import main
from streamproc.errors import ConfigError
from streamproc.sources.config import SourceConfig
from streamproc.sources.source import VideoSource
from streamproc.sources.synth import write_pattern_video
from streamproc.types import Decision

FPS = 10.0


def frames_of(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """All frames and times of a file, read the way the pipeline reads it."""
    with VideoSource(SourceConfig(uri=str(path))) as video:
        batches = list(video)
    return np.concatenate([b.frames for b in batches]), np.concatenate([b.pts for b in batches])


def decision(track_id: int, identity: str | None, distance: float, revision: int = 0) -> Decision:
    return Decision("clip", track_id, 0.0, 1.0, identity, distance, 3, "v1", "v1", revision=revision)


def ring(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The pixels of a box's outline (2 px), where the annotator draws."""
    x1, y1, x2, y2 = box
    return np.concatenate(
        [image[y1 : y1 + 2, x1:x2].reshape(-1, 3), image[y2 - 1 : y2 + 1, x1:x2].reshape(-1, 3)]
    ).astype(np.int16)


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_pattern_video(tmp_path / "clip.mp4", width=320, height=240, n_frames=10, fps=FPS)


def test_labels_follow_tracks_and_their_latest_decision(clip: Path, tmp_path: Path) -> None:
    _, pts = frames_of(clip)
    box_a, box_b = (40, 60, 120, 150), (180, 60, 260, 150)
    rows = [[pts[i], 0, *box_a] for i in (0, 2, 4)]  # track 0 detected every 2nd frame, then gone
    rows += [[pts[i], 1, *box_b] for i in (4, 6)] + [[pts[8], 2, *box_b]]
    annotator = Annotator(tmp_path / "out", [SourceConfig(uri=str(clip))], hold_frames=2)
    annotator.add("clip", np.array(rows[:3], float), [decision(0, "ada", 0.40)])
    annotator.add("clip", np.array(rows[3:], float), [decision(1, None, 1.42), decision(0, "ada", 0.3512, 1)])

    written = annotator.write()

    video = written["clip"]
    assert video.path == tmp_path / "out" / "clip.mp4" and video.frames == 10
    # the revision wins on every frame of its track; a box holds until the next detection pass
    assert dict(video.labels) == {"track 0: ada d=0.351": 6, "track 1: unknown d=1.420": 4, "track 2": 2}
    source, _ = frames_of(clip)
    out, out_pts = frames_of(video.path)
    assert len(out) == 10 and np.allclose(out_pts, pts)
    drawn = np.abs(ring(out[2], box_a) - ring(source[2], box_a)).mean()
    held = np.abs(ring(out[5], box_a) - ring(source[5], box_a)).mean()
    gone = np.abs(ring(out[6], box_a) - ring(source[6], box_a)).mean()
    assert drawn > 40 and held > 40 and gone < 8, (drawn, held, gone)


def test_a_detection_pass_takes_down_the_boxes_held_from_the_last(clip: Path, tmp_path: Path) -> None:
    _, pts = frames_of(clip)
    box = (40, 60, 120, 150)
    rows = [[pts[0], 0, *box], [pts[2], 0, *box], [pts[3], 1, *box]]  # the guard split track 0 at frame 3
    annotator = Annotator(tmp_path / "out", [SourceConfig(uri=str(clip))], hold_frames=3)
    annotator.add("clip", np.array(rows, float))

    video = annotator.write()["clip"]

    assert dict(video.labels) == {"track 0": 3, "track 1": 3}  # never both on one face


def test_label_text() -> None:
    assert label_text(4, None) == "track 4"
    assert label_text(4, decision(4, "ada", 0.41234)) == "track 4: ada d=0.412"
    assert label_text(5, decision(5, None, float("nan"))) == "track 5: unknown d=n/a"


def test_a_stopped_run_gets_the_frames_it_processed(clip: Path, tmp_path: Path) -> None:
    annotator = Annotator(tmp_path / "out", [SourceConfig(uri=str(clip))])
    written = annotator.write(frames={"clip": 4})
    assert written["clip"].frames == 4
    assert len(frames_of(written["clip"].path)[0]) == 4


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"uri": "rtsp://127.0.0.1:9/cam"}, "live source"),
        ({"uri": "clip.mp4", "live": True}, "live source"),
    ],
)
def test_live_sources_are_refused(source: dict[str, object], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        Annotator(tmp_path, [SourceConfig.model_validate(source)])


def test_cli_refuses_annotate_for_a_live_source(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["run", "--source", "rtsp://127.0.0.1:9/cam", "--annotate", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "--annotate" in err and "live" in err, err
