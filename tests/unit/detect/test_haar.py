"""OpenCV Haar cascade behind the Detector interface, on real LFW faces."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from streamproc.config import DetectorConfig
from streamproc.detect import HaarDetector, build_detector
from streamproc.errors import InputError


@pytest.fixture(scope="module")
def detector() -> HaarDetector:
    return HaarDetector(DetectorConfig(kind="haar"))


@pytest.fixture(scope="module")
def lfw_images(lfw_dir: Path) -> list[np.ndarray]:
    people = sorted((lfw_dir / "lfw-deepfunneled").iterdir())
    paths = [sorted(person.glob("*.jpg"))[0] for person in people[:: len(people) // 5][:5]]
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]  # type: ignore[arg-type]


def test_finds_the_lfw_subject(detector, lfw_images):
    for k, faces in enumerate(detector(lfw_images)):
        centre = [x1 <= 125 <= x2 and y1 <= 125 <= y2 for x1, y1, x2, y2 in faces.boxes]
        assert any(centre), f"image {k}: no box contains the centre, got {faces.boxes}"
        assert np.all((faces.scores > 0) & (faces.scores <= 1))
        assert np.isnan(faces.landmarks).all()
        assert np.all(faces.frame_index == k)


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        ([], []),
        ([np.full((120, 160, 3), 128, np.uint8)], [0]),
        ([np.zeros((5, 5, 3), np.uint8)] * 2, [0, 0]),
    ],
)
def test_no_faces(detector, images, expected):
    assert [len(f) for f in detector(images)] == expected


@pytest.mark.parametrize(
    "images",
    [[np.zeros((10, 10), np.uint8)], [np.zeros((10, 10, 3), np.int16)], np.zeros((10, 10, 3), np.uint8)],
)
def test_bad_inputs(detector, images):
    with pytest.raises(InputError, match="uint8 RGB"):
        detector(images)


def test_build_detector():
    assert isinstance(build_detector(DetectorConfig(kind="haar")), HaarDetector)
