"""Detection on a shrunk copy of a large frame (``detector.max_side``), with the real MTCNN on LFW faces.

The hard case: faces pasted into a 1920x1080 frame. Detected on a copy whose longer side is 640,
the boxes and landmarks must come back in full-frame pixels, where the full-size pass puts them;
and the shrink must stop where the configured smallest face would drop under P-Net's 12 px window.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from streamproc.config import DetectorConfig
from streamproc.detect import MTCNN, HaarDetector
from streamproc.detect.mtcnn import PNET_CELL

FULL_W, FULL_H = 1920, 1080


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path))
    assert bgr is not None, f"cannot read {path}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def street_frame(lfw_dir: Path) -> np.ndarray:
    """Three LFW photos (250x250, faces ~110 px) enlarged 1.5x, pasted into a grey 1080p frame."""
    people = sorted((lfw_dir / "lfw-deepfunneled").iterdir())[::400][:3]
    frame = np.full((FULL_H, FULL_W, 3), 96, np.uint8)
    for k, person in enumerate(people):
        photo = cv2.resize(read_rgb(sorted(person.glob("*.jpg"))[0]), (375, 375))
        x, y = 150 + k * 600, 300 + (k % 2) * 200
        frame[y : y + 375, x : x + 375] = photo
    return frame


def detect(weights: Path, frame: np.ndarray, **settings: object):
    return MTCNN(DetectorConfig(**settings), weights)([frame])[0]  # type: ignore[arg-type]


def test_shrunk_detection_maps_boxes_and_landmarks_back_to_the_full_frame(mtcnn_weights_dir, street_frame):
    full = detect(mtcnn_weights_dir, street_frame, min_face_size=60)
    small = detect(mtcnn_weights_dir, street_frame, min_face_size=60, max_side=640)
    big = lambda f: f[(f.widths > 100) & (f.scores > 0.95)]  # noqa: E731
    full, small = big(full), big(small)
    assert len(full) == 3 and len(small) == 3, (full.boxes, small.boxes)
    order_f, order_s = np.argsort(full.boxes[:, 0]), np.argsort(small.boxes[:, 0])
    side = full.widths[order_f][:, None]
    # a pixel of the 640-wide copy is 3 frame pixels: boxes agree within a few percent of the face
    assert np.all(np.abs(small.boxes[order_s] - full.boxes[order_f]) < 0.08 * side)
    marks_f, marks_s = full.landmarks[order_f], small.landmarks[order_s]
    error = np.abs(marks_s - marks_f) / side[:, :, None]
    # eyes and nose land within a few pixels; a mouth corner of a 46 px face in the copy may move more
    assert np.median(error) < 0.02 and error.max() < 0.15, error


@pytest.mark.parametrize(
    ("max_side", "min_face_size", "expected"),
    [
        (None, 20, 1.0),  # off
        (640, 60, 640 / FULL_W),  # 60 px faces are 20 px in the copy: above P-Net's 12
        (640, 20, PNET_CELL / 20),  # 20 px faces would be 6.7 px: shrink only to 12 px
        (4000, 20, 1.0),  # never enlarges
    ],
)
def test_shrink_stops_at_the_smallest_face(mtcnn_weights_dir, max_side, min_face_size, expected):
    detector = MTCNN(DetectorConfig(max_side=max_side, min_face_size=min_face_size), mtcnn_weights_dir)
    assert detector.detect_scale(FULL_H, FULL_W) == pytest.approx(expected)


def test_haar_maps_back_too(street_frame):
    config = DetectorConfig(kind="haar", min_face_size=60)
    full = HaarDetector(config)([street_frame])[0]
    small = HaarDetector(config.model_copy(update={"max_side": 960}))([street_frame])[0]
    full, small = full[full.widths > 100], small[small.widths > 100]
    assert len(full) >= 3 and len(small) >= 3
    for box in small.boxes:  # each box of the shrunk pass lies on a full-size box
        centre = (box[:2] + box[2:]) / 2
        assert np.min(np.abs((full.boxes[:, :2] + full.boxes[:, 2:]) / 2 - centre).max(axis=1)) < 25
