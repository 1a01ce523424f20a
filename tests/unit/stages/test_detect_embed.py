"""Detect every k-th frame, track, align and embed: a fake detector for the schedule, then real
MTCNN + real FaceNet on frames made of real celebrity photos pasted at known places."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from streamproc.config import AlignConfig, DetectorConfig
from streamproc.detect import build_detector
from streamproc.detect.base import Detector
from streamproc.models.embedder import Embedder
from streamproc.stages.aggregate import AggregateStage
from streamproc.stages.config import AggregateConfig, DetectStageConfig, TrackConfig
from streamproc.stages.detect import DetectStage, detection_mask
from streamproc.stages.embed import EmbedStage, crops_for, with_embeddings
from streamproc.stages.track import TrackStage
from streamproc.types import Faces, FrameBatch


class RecordingDetector(Detector):
    """One face per image at a fixed box with a fixed score; remembers how many images each call got."""

    def __init__(self, box: Sequence[float] = (10, 10, 50, 60), score: float = 0.9):
        self.box, self.score = box, score
        self.calls: list[int] = []

    def _detect(self, images: list[np.ndarray]) -> list[Faces]:
        self.calls.append(len(images))
        return [Faces(boxes=[self.box], scores=[self.score]) for _ in images]


def make_batch(n: int, *, first_frame: int = 0, stream: str = "cam", eos: bool = False) -> FrameBatch:
    frames = np.zeros((n, 64, 64, 3), np.uint8)
    return FrameBatch(stream, frames, (first_frame + np.arange(n)) / 25.0, end_of_stream=eos)


def test_detection_mask_counts_across_batches() -> None:
    whole = detection_mask(0, 11, every_k=3)
    parts = np.concatenate([detection_mask(0, 4, 3), detection_mask(4, 4, 3), detection_mask(8, 3, 3)])
    assert whole.tolist() == parts.tolist()
    assert np.flatnonzero(whole).tolist() == [0, 3, 6, 9]


@pytest.mark.parametrize(
    ("sizes", "every_k", "calls", "frames_with_faces"),
    [
        ([4, 4, 3], 3, [2, 1, 1], [[0, 3], [2], [1]]),
        ([5], 1, [5], [[0, 1, 2, 3, 4]]),
        ([2, 2, 2], 5, [1, 1], [[0], [], [1]]),  # no call at all for a batch without detection frames
    ],
)
def test_detects_every_kth_frame_in_one_call_per_batch(
    sizes: list[int], every_k: int, calls: list[int], frames_with_faces: list[list[int]]
) -> None:
    detector = RecordingDetector()
    stage = DetectStage(DetectStageConfig(every_k_frames=every_k), detector)
    start = 0
    for n, expected in zip(sizes, frames_with_faces, strict=True):
        out = stage(make_batch(n, first_frame=start))
        start += n
        assert out.faces.frame_index.tolist() == expected  # type: ignore[union-attr]
        assert out.faces.track_id.tolist() == [-1] * len(expected)  # type: ignore[union-attr]
        assert out.faces.needs_embedding.all()  # type: ignore[union-attr]
    assert detector.calls == calls


def test_counter_is_per_stream_and_restarts_after_end_of_stream() -> None:
    stage = DetectStage(DetectStageConfig(every_k_frames=2), RecordingDetector())
    assert stage(make_batch(3, stream="a", eos=True)).faces.frame_index.tolist() == [0, 2]  # type: ignore[union-attr]
    assert stage(make_batch(3, stream="b")).faces.frame_index.tolist() == [0, 2]  # type: ignore[union-attr]
    assert stage(make_batch(3, stream="b")).faces.frame_index.tolist() == [1]  # type: ignore[union-attr]
    assert stage(make_batch(3, stream="a")).faces.frame_index.tolist() == [0, 2]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("box", "score", "min_score", "quality"),
    [
        ((10, 10, 50, 60), 0.9, 0.0, 0.9 * 40 / 80),  # the shorter side (40 px) sets the size term
        ((0, 0, 64, 64), 0.8, 0.0, 0.8 * 64 / 80),
        ((10, 10, 50, 60), 0.9, 0.95, None),  # dropped
    ],
)
def test_min_score_and_quality(box: tuple, score: float, min_score: float, quality: float | None) -> None:
    config = DetectStageConfig(every_k_frames=1, min_score=min_score, quality_face_size=80)
    faces = DetectStage(config, RecordingDetector(box, score))(make_batch(1)).faces
    if quality is None:
        assert len(faces) == 0
    else:
        assert faces.quality.tolist() == pytest.approx([quality])  # type: ignore[union-attr]


def test_crops_for_skips_unwanted_and_uncuttable_faces() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    faces = Faces(
        boxes=[[4, 4, 30, 30], [100, 100, 120, 120], [10, 10, 40, 40], [30, 30, 60, 60]],
        scores=np.ones(4),
        frame_index=[0, 0, 1, 1],
        needs_embedding=[True, True, False, True],  # row 1 lies outside the 64x64 frame
    )
    batch = FrameBatch("cam", frames, [0.0, 0.04], faces=faces)
    rows, crops = crops_for(batch, AlignConfig(mode="crop", image_size=32, margin=0.0))
    assert rows.tolist() == [0, 3]
    assert crops.images.shape == (2, 32, 32, 3) and crops.images.dtype == np.uint8
    assert np.isnan(crops.points).all()  # these faces carry no landmarks
    expected = cv2.resize(frames[1][30:60, 30:60], (32, 32), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(crops.images[1], expected)
    out = with_embeddings(batch, rows, np.eye(2, 4, dtype=np.float32), "v9", 4)
    assert out.model_version == "v9"
    assert np.isfinite(out.faces.embedding).all(axis=1).tolist() == [True, False, False, True]  # type: ignore[arg-type]


# --- real MTCNN + real FaceNet ----------------------------------------------------------------------

CANVAS = (300, 720)  # height, width
FACE_HEIGHT = 240


@pytest.fixture(scope="module")
def detector(mtcnn_weights_dir: Path) -> Detector:
    torch.set_num_threads(1)
    return build_detector(DetectorConfig(), mtcnn_weights_dir)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    torch.set_num_threads(1)
    return Embedder()


@pytest.fixture(scope="module")
def portraits(celebrity_dir: Path, detector: Detector) -> list[np.ndarray]:
    """For two people, the first validation photo with exactly one clear face, FACE_HEIGHT px tall."""
    found = []
    for person in ("ben_afflek", "mindy_kaling"):
        for path in sorted((celebrity_dir / "val" / person).glob("*.jpg")):
            image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            width = round(image.shape[1] * FACE_HEIGHT / image.shape[0])
            image = cv2.resize(image, (width, FACE_HEIGHT), interpolation=cv2.INTER_AREA)
            faces = detector([image])[0]
            if len(faces) == 1 and faces.scores[0] > 0.95 and faces.widths[0] > 60:
                found.append(image)
                break
    if len(found) < 2:
        pytest.skip("no clear single-face validation photo for two people")
    return found


def paste_positions(frame: int) -> list[tuple[int, int]]:
    """(x, y) of each portrait's top-left corner: A walks right, B walks left, 3 px a frame."""
    return [(20 + 3 * frame, 30), (420 - 3 * frame, 20)]


def make_video(portraits: list[np.ndarray], n_frames: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    video = np.empty((n_frames, *CANVAS, 3), np.uint8)
    for f in range(n_frames):
        video[f] = rng.integers(90, 110, (*CANVAS, 3), dtype=np.uint8)
        for image, (x, y) in zip(portraits, paste_positions(f), strict=True):
            video[f, y : y + image.shape[0], x : x + image.shape[1]] = image
    return video


def test_detect_track_embed_on_real_faces(
    detector: Detector, embedder: Embedder, portraits: list[np.ndarray]
) -> None:
    every_k, n_frames = 3, 8
    detect = DetectStage(DetectStageConfig(every_k_frames=every_k, min_score=0.9), detector)
    track = TrackStage(
        TrackConfig(),
        detect=DetectStageConfig(every_k_frames=every_k),
        aggregate=AggregateConfig(n_frames=100),
    )
    embed = EmbedStage(AlignConfig(), embedder)
    aggregate = AggregateStage(AggregateConfig(n_frames=100, min_frames=2))
    decisions = []
    video = make_video(portraits, n_frames)
    pts = np.arange(n_frames) / 25.0
    faces_per_frame: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for start, stop in [(0, 5), (5, 8)]:  # frames 0, 3 | 6 are detection frames
        batch = FrameBatch("cam", video[start:stop], pts[start:stop], end_of_stream=stop == n_frames)
        out = aggregate(embed(track(detect(batch))))
        decisions.append(sorted((d.track_id, d.revision, d.n_frames) for d in out.decisions))
        assert out.model_version == embedder.version
        faces = out.faces
        assert faces.embedding is not None and faces.embedding.shape == (len(faces), 128)
        for i in np.unique(faces.frame_index).tolist():  # type: ignore[arg-type]
            here = faces.frame_index == i
            faces_per_frame[start + i] = (faces.boxes[here], faces.track_id[here], faces.embedding[here])  # type: ignore[index]
        if stop == n_frames:
            assert sorted(out.closed_tracks) == [0, 1]
    assert sorted(faces_per_frame) == [0, 3, 6]

    by_track: dict[int, list[np.ndarray]] = {0: [], 1: []}
    person_of: dict[int, int] = {}
    for f, (boxes, ids, emb) in sorted(faces_per_frame.items()):
        assert len(boxes) == 2, f"frame {f}: expected the two pasted faces, got {boxes}"
        for box, tid, e in zip(boxes, ids.tolist(), emb, strict=True):
            person = 0 if box[0] < CANVAS[1] / 2 else 1
            x, y = paste_positions(f)[person]
            h, w = portraits[person].shape[:2]
            assert x <= box[0] < box[2] <= x + w and y <= box[1] < box[3] <= y + h
            assert person_of.setdefault(tid, person) == person, f"frame {f}: track {tid} changed person"
            assert abs(float(np.linalg.norm(e)) - 1) < 1e-4
            by_track[tid].append(e)
    assert sorted(person_of.values()) == [0, 1]
    for tid, embs in by_track.items():
        for a, b in pairwise(embs):
            assert float(((a - b) ** 2).sum()) < 0.5, f"track {tid}: consecutive embeddings too far apart"
    across = float(((by_track[0][0] - by_track[1][0]) ** 2).sum())
    within = max(float(((a - b) ** 2).sum()) for embs in by_track.values() for a, b in pairwise(embs))
    assert across > within
    # two faces per track by the end of the first batch, the third arrives before end_of_stream closes it
    assert decisions == [[(0, 0, 2), (1, 0, 2)], [(0, 1, 3), (1, 1, 3)]]
