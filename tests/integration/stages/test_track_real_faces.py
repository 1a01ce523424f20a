"""The tracker behind the real MTCNN on real LFW faces that move fast, detected on every 10th frame
as the real-time profile does: one track id per person, and no swapped ids where two people cross.

Between two detection passes a face here moves about its own width, so the boxes of consecutive
passes barely overlap: the IoU round alone loses the track on every pass.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from streamproc import scenes
from streamproc.config import SHIPPED, load_config
from streamproc.detect import Detector, build_detector
from streamproc.faces import read_image
from streamproc.stages.config import DetectStageConfig, TrackConfig
from streamproc.stages.track import TrackStage, iou_matrix
from streamproc.types import Faces, FrameBatch

pytestmark = pytest.mark.integration
FPS, EVERY_K, SIZE = 25.0, 10, (640, 360)


@pytest.fixture(scope="module")
def detector(mtcnn_weights_dir: Path) -> Detector:
    return build_detector(load_config(SHIPPED / "realtime.yaml").detector, mtcnn_weights_dir)


def photo(lfw_dir: Path, person: str) -> scenes.Photo:
    image = read_image(lfw_dir / "lfw-deepfunneled" / person / f"{person}_0001.jpg")
    return scenes.Photo(person, image)


def track_ids(detector: Detector, shots: Sequence[scenes.Shot]) -> dict[str, set[int]]:
    """Per person, the track ids the tracker gave the faces found on them (every EVERY_K-th frame)."""
    tracker = TrackStage(TrackConfig(), detect=DetectStageConfig(every_k_frames=EVERY_K))
    truth = scenes.GroundTruth(FPS, SIZE)
    ids: dict[str, set[int]] = defaultdict(set)
    for i, frame in enumerate(scenes.frames(shots, SIZE, FPS, truth=truth)):
        faces = detector([frame])[0] if i % EVERY_K == 0 else Faces.empty()
        out = tracker(FrameBatch("cam", frame[None], [i / FPS], faces=faces))
        for box, tid in zip(out.faces.boxes, out.faces.track_id.tolist(), strict=True):
            shown = truth.faces[i]
            overlap = iou_matrix(box[None], np.array([f.box for f in shown]).reshape(-1, 4))[0]
            if len(shown) and overlap.max() >= 0.4:
                ids[shown[int(overlap.argmax())].person].add(tid)
    return dict(ids)


def test_a_fast_walker_keeps_one_track(detector: Detector, lfw_dir: Path) -> None:
    a = photo(lfw_dir, "Aaron_Peirsol")
    start, end = scenes.box_at(60, 180, 90), scenes.box_at(580, 180, 90)  # 2.2 face widths a second
    ids = track_ids(detector, [scenes.Shot(2.6, [scenes.Appearance(a, 0.0, 2.6, start, end)])])
    assert ids == {a.person: {0}}, ids


def test_fast_walkers_crossing_keep_their_own_ids(detector: Detector, lfw_dir: Path) -> None:
    a, b = photo(lfw_dir, "Aaron_Peirsol"), photo(lfw_dir, "Serena_Williams")
    shots = scenes.crossing(a, b, seconds=2.4, width=80, size=SIZE)  # 2.6 face widths a second each
    ids = track_ids(detector, shots)
    assert sorted(ids) == [a.person, b.person] and all(len(v) == 1 for v in ids.values()), ids
    assert ids[a.person] != ids[b.person], ids
