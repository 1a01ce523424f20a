"""Face crops, similarity alignment and the single-face pick."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from streamproc.align import (
    TEMPLATE_112,
    align_faces,
    center_crop,
    crop_with_margin,
    pick_face,
    similarity_align,
    similarity_transform,
)
from streamproc.config import AlignConfig
from streamproc.errors import ConfigError, InputError
from streamproc.types import Faces


def make_faces(boxes, scores=None, landmarks=None) -> Faces:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.ones(len(boxes)) if scores is None else scores
    return Faces(boxes=boxes, scores=np.asarray(scores, np.float32), landmarks=landmarks)


def gradient_image(height: int = 100, width: int = 120) -> np.ndarray:
    y, x = np.mgrid[:height, :width]
    return np.stack([x * 2, y * 2, (x + y) % 256], axis=2).astype(np.uint8)


def similar_landmarks(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    """The template moved by a known similarity: where a face's landmarks would be."""
    a = math.radians(angle_deg)
    rot = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return TEMPLATE_112 @ rot.T + np.array(shift)


# --- pick_face -------------------------------------------------------------------------------

PICK_FACES = make_faces(
    [[0, 0, 60, 60], [45, 45, 65, 65], [160, 10, 200, 50]],  # big corner, small centre, right
    scores=[0.8, 0.7, 0.99],
)


@pytest.mark.parametrize(
    ("faces", "policy", "expected", "error"),
    [
        (PICK_FACES, "center", 1, None),
        (PICK_FACES, "largest", 0, None),
        (PICK_FACES, "score", 2, None),
        (PICK_FACES[np.array([0, 2])], "center", 0, None),
        (make_faces([[90, 40, 110, 60]]), "center", 0, None),
        (Faces.empty(), "center", None, None),
        (Faces.empty(), "largest", None, None),
        (PICK_FACES, "random", None, ConfigError),
    ],
)
def test_pick_face(faces, policy, expected, error):
    if error:
        with pytest.raises(error):
            pick_face(faces, (110, 200, 3), policy)
    else:
        assert pick_face(faces, (110, 200, 3), policy) == expected


def test_pick_center_uses_width_as_x():
    faces = make_faces([[10, 80, 30, 100], [80, 10, 100, 30]])  # image 40 tall, 180 wide: centre (90, 20)
    assert pick_face(faces, (40, 180, 3), "center") == 1


# --- crop_with_margin ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("box", "margin", "size", "error"),
    [
        ([40, 30, 60, 50], 0.0, 20, None),
        ([40, 30, 60, 80], 0.2, 160, None),  # tall box: square from the longer side
        ([0, 0, 30, 30], 1.0, 64, None),  # runs off the top-left corner
        ([100, 80, 130, 110], 0.5, 32, None),  # runs off the bottom-right corner
        ([50, 50, 50, 60], 0.2, 32, InputError),  # no width
        ([500, 500, 520, 520], 0.2, 32, InputError),  # outside the image
    ],
)
def test_crop_sizes(box, margin, size, error):
    image = gradient_image()
    if error:
        with pytest.raises(error):
            crop_with_margin(image, np.array(box), margin, size)
    else:
        crop = crop_with_margin(image, np.array(box), margin, size)
        assert crop.shape == (size, size, 3) and crop.dtype == np.uint8


def test_crop_without_resize_is_the_pixels():
    image = gradient_image()
    crop = crop_with_margin(image, np.array([40, 30, 60, 50]), 0.0, 20)
    np.testing.assert_array_equal(crop, image[30:50, 40:60])
    crop = crop_with_margin(image, np.array([40, 30, 60, 50]), 0.5, 30)  # 5 px more on each side
    np.testing.assert_array_equal(crop, image[25:55, 35:65])


@pytest.mark.parametrize(("pad", "corner_value"), [("zeros", 0), ("edge", 255)])
def test_crop_padding_at_borders(pad, corner_value):
    image = np.full((50, 50, 3), 255, np.uint8)
    crop = crop_with_margin(image, np.array([0, 0, 20, 20]), 1.0, 40, pad=pad)  # square [-10, 30)
    assert np.all(crop[:10, :10] == corner_value) and np.all(crop[:10, 10:] == corner_value)
    assert np.all(crop[10:, 10:] == 255)


# --- similarity alignment ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("angle", "scale", "shift"),
    [
        (0.0, 1.0, (0.0, 0.0)),
        (20.0, 1.7, (30.0, -10.0)),
        (-35.0, 0.6, (80.0, 40.0)),
        (90.0, 2.5, (300.0, 5.0)),
    ],
)
@pytest.mark.parametrize("size", [112, 160])
def test_transform_maps_landmarks_onto_template(angle, scale, shift, size):
    points = similar_landmarks(angle, scale, shift)
    matrix = similarity_transform(points, TEMPLATE_112 * size / 112)
    mapped = points @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, TEMPLATE_112 * size / 112, atol=1e-6)


def blob_centre(image: np.ndarray, x: float, y: float, radius: int = 6) -> tuple[float, float]:
    """Brightness-weighted centre of the window around (x, y)."""
    x0, y0 = round(x) - radius, round(y) - radius
    window = image[y0 : y0 + 2 * radius + 1, x0 : x0 + 2 * radius + 1, 0].astype(np.float64)
    ys, xs = np.mgrid[: window.shape[0], : window.shape[1]]
    return x0 + (window * xs).sum() / window.sum(), y0 + (window * ys).sum() / window.sum()


@pytest.mark.parametrize(("angle", "scale", "shift"), [(15.0, 1.5, (40.0, 20.0)), (-25.0, 2.0, (10.0, 60.0))])
@pytest.mark.parametrize("size", [112, 160])
def test_aligned_image_puts_landmarks_on_template(angle, scale, shift, size):
    points = similar_landmarks(angle, scale, shift)
    image = np.zeros((400, 400, 3), np.float32)
    ys, xs = np.mgrid[:400, :400]
    for x, y in points:  # a soft dot on each landmark
        image[..., 0] += 255 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * (1.5 * scale) ** 2))
    aligned = similarity_align(np.clip(image, 0, 255).astype(np.uint8), points, size)
    assert aligned.shape == (size, size, 3) and aligned.dtype == np.uint8
    for (tx, ty), k in zip(TEMPLATE_112 * size / 112, range(5), strict=True):
        cx, cy = blob_centre(aligned, tx, ty)
        assert math.hypot(cx - tx, cy - ty) < 1.0, f"landmark {k}: at ({cx:.2f}, {cy:.2f}), want ({tx}, {ty})"


@pytest.mark.parametrize(
    "landmarks",
    [np.full((5, 2), np.nan), np.zeros((4, 2)), np.full((5, 2), 7.0)],
    ids=["nan", "four-points", "one-point"],
)
def test_similarity_bad_landmarks(landmarks):
    with pytest.raises(InputError):
        similarity_align(gradient_image(), landmarks, 112)


# --- align_faces and center_crop ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "landmarks", "n", "error"),
    [
        ("crop", None, 2, None),
        ("similarity", np.stack([similar_landmarks(5.0, 0.5, (20.0, 10.0))] * 2), 2, None),
        ("similarity", None, 2, InputError),  # no landmarks (Haar)
        ("crop", None, 0, None),
        ("similarity", None, 0, None),
    ],
)
def test_align_faces(mode, landmarks, n, error):
    faces = make_faces([[20, 20, 60, 70], [70, 10, 100, 40]][:n], landmarks=landmarks)
    config = AlignConfig(mode=mode, image_size=48)
    if error:
        with pytest.raises(error, match="needs landmarks"):
            align_faces(gradient_image(), faces, config)
    else:
        out = align_faces(gradient_image(), faces, config)
        assert out.shape == (n, 48, 48, 3) and out.dtype == np.uint8


def test_align_crop_matches_crop_with_margin():
    image = gradient_image()
    faces = make_faces([[20, 20, 60, 70]])
    out = align_faces(image, faces, AlignConfig(mode="crop", margin=0.3, image_size=64))
    np.testing.assert_array_equal(out[0], crop_with_margin(image, faces.boxes[0], 0.3, 64))


@pytest.mark.parametrize(
    ("shape", "size", "fraction", "error"),
    [((250, 250), 160, 0.5, None), ((100, 200), 32, 1.0, None), ((100, 200), 32, 0.0, InputError)],
)
def test_center_crop(shape, size, fraction, error):
    image = gradient_image(*shape)
    if error:
        with pytest.raises(error):
            center_crop(image, size, fraction)
        return
    crop = center_crop(image, size, fraction)
    assert crop.shape == (size, size, 3)
    side = round(min(shape) * fraction)
    top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
    expected = cv2.resize(
        image[top : top + side, left : left + side], (size, size), interpolation=cv2.INTER_AREA
    )
    if side > size:
        np.testing.assert_array_equal(crop, expected)
