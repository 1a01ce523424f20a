"""Turn detected faces into fixed-size square face images for the embedder.

Two modes (``AlignConfig.mode``):

* ``crop``: a square around the box, enlarged by ``margin`` (the square's side is
  ``max(w, h) * (1 + margin)``, so ``margin / 2`` of the box on each side), padded where it
  leaves the image, resized.
* ``similarity``: the rotation + uniform scale + shift (least squares, Umeyama 1991) that
  carries the 5 landmarks onto ``TEMPLATE_112`` scaled to the output size, then one warp.

``TEMPLATE_112`` is the standard 5-point template of 112x112 face crops used by
SphereFace/ArcFace (InsightFace): left eye, right eye, nose tip, left and right mouth corner,
"left" meaning the smaller x in the image. The 96x112 SphereFace template is the same points
8 px to the left; we use the square one and scale it by ``size / 112``.

>>> image = np.zeros((100, 100, 3), np.uint8)
>>> crop_with_margin(image, np.array([40, 40, 60, 60]), margin=0.2, size=32).shape
(32, 32, 3)
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from streamproc.config import AlignConfig
from streamproc.detect.base import check_image
from streamproc.errors import ConfigError, InputError
from streamproc.types import Faces

TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],  # left eye
        [73.5318, 51.5014],  # right eye
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # left mouth corner
        [70.7299, 92.2041],  # right mouth corner
    ],
    np.float64,
)

PickPolicy = Literal["center", "largest", "score"]


def pick_face(faces: Faces, image_shape: tuple[int, ...], policy: PickPolicy) -> int | None:
    """Row of the one face a single-face task should use, or None when there is none.

    ``center``: box centre nearest the image centre (LFW's subject is the central face);
    ``largest``: biggest box area; ``score``: highest detector score.

    >>> faces = Faces(boxes=np.array([[0, 0, 50, 50], [40, 40, 60, 60]]), scores=np.array([0.9, 0.8]))
    >>> pick_face(faces, (100, 100, 3), "center"), pick_face(faces, (100, 100, 3), "largest")
    (1, 0)
    """
    if policy not in ("center", "largest", "score"):
        raise ConfigError(f"pick policy: expected 'center', 'largest' or 'score', got {policy!r}")
    if len(faces) == 0:
        return None
    if policy == "score":
        return int(np.argmax(faces.scores))
    if policy == "largest":
        return int(np.argmax(faces.widths * faces.heights))
    centres = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2
    middle = np.array([image_shape[1], image_shape[0]], np.float32) / 2
    return int(np.argmin(((centres - middle) ** 2).sum(axis=1)))


def _resize(patch: np.ndarray, size: int) -> np.ndarray:
    shrink = patch.shape[0] > size or patch.shape[1] > size
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def crop_with_margin(
    image: np.ndarray, box: np.ndarray, margin: float, size: int, pad: Literal["zeros", "edge"] = "zeros"
) -> np.ndarray:
    """Square crop centred on ``box`` (x1 y1 x2 y2), side ``max(w, h) * (1 + margin)``, as (size, size, 3).

    Parts outside the image are black (``pad="zeros"``) or repeat the border pixels
    (``pad="edge"``). A box wholly outside the image is an ``InputError``.
    """
    image = check_image(image, 0)
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1):
        raise InputError(f"crop_with_margin: expected a box with x2 > x1 and y2 > y1, got {box}")
    side = max(1, round(max(x2 - x1, y2 - y1) * (1 + margin)))
    left = round((x1 + x2) / 2 - side / 2)
    top = round((y1 + y2) / 2 - side / 2)
    h, w = image.shape[:2]
    sx1, sy1, sx2, sy2 = max(left, 0), max(top, 0), min(left + side, w), min(top + side, h)
    if sx2 <= sx1 or sy2 <= sy1:
        raise InputError(f"crop_with_margin: box {box} lies outside the {w}x{h} image")
    widths = ((sy1 - top, top + side - sy2), (sx1 - left, left + side - sx2), (0, 0))
    patch = np.pad(image[sy1:sy2, sx1:sx2], widths, mode="constant" if pad == "zeros" else "edge")
    return _resize(patch, size)


def landmarks_in_crop(box: np.ndarray, landmarks: np.ndarray, margin: float, size: int) -> np.ndarray:
    """Where ``landmarks`` (image pixels) land in ``crop_with_margin(image, box, margin, size)``.

    >>> landmarks_in_crop(np.array([40, 40, 60, 60]), np.array([[50.0, 50.0]] * 5), 0.2, 24)[0].tolist()
    [12.0, 12.0]
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(1, round(max(x2 - x1, y2 - y1) * (1 + margin)))
    left, top = round((x1 + x2) / 2 - side / 2), round((y1 + y2) / 2 - side / 2)
    points = (np.asarray(landmarks, np.float64) - [left, top]) * (size / side)
    return points.astype(np.float32)


def crop_landmarks(faces: Faces, config: AlignConfig) -> np.ndarray:
    """(N, 5, 2) landmarks of ``faces`` inside the crops ``align_faces(image, faces, config)`` cuts.

    Rows without landmarks stay NaN (the Haar detector gives none); in similarity mode they are,
    by construction, the template's.
    """
    size = config.image_size
    marks = np.asarray(faces.landmarks, np.float32).reshape(len(faces), 5, 2)
    known = np.isfinite(marks).all(axis=(1, 2))
    if config.mode == "similarity":
        out = np.broadcast_to(TEMPLATE_112 * (size / 112.0), (len(faces), 5, 2)).astype(np.float32)
    else:
        out = np.full((len(faces), 5, 2), np.nan, np.float32)
        for i in np.flatnonzero(known):
            out[i] = landmarks_in_crop(faces.boxes[i], marks[i], config.margin, size)
    out[~known] = np.nan
    return out


def adapt_crops(images: np.ndarray, points: np.ndarray, alignment: str, size: int) -> np.ndarray:
    """Turn pipeline crops into a model's input: ``"crop"`` resizes, ``"similarity"`` warps.

    A similarity model given a crop without landmarks gets that crop resized.

    >>> adapt_crops(np.zeros((1, 40, 40, 3), np.uint8), np.full((1, 5, 2), np.nan), "similarity", 16).shape
    (1, 16, 16, 3)
    """
    if alignment not in ("crop", "similarity"):
        raise ConfigError(f"model alignment: expected 'crop' or 'similarity', got {alignment!r}")
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, image in enumerate(images):
        if alignment == "similarity" and np.isfinite(points[i]).all():
            out[i] = similarity_align(image, points[i], size)
        elif image.shape[:2] == (size, size):
            out[i] = image
        else:
            out[i] = _resize(image, size)
    return out


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the least-squares rotation + uniform scale + shift taking ``src`` to ``dst``.

    >>> src = np.array([[0.0, 0], [1, 0], [0, 1]])
    >>> np.round(similarity_transform(src, 2 * src + 5), 6).tolist()
    [[2.0, 0.0, 5.0], [0.0, 2.0, 5.0]]
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var <= 1e-12:
        raise InputError("similarity alignment: the landmarks all sit on one point")
    u, s, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    flip = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])  # no reflections
    rotation = u @ flip @ vt
    scale = float(np.trace(np.diag(s) @ flip)) / src_var
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def similarity_align(image: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """Warp ``image`` so the 5 ``landmarks`` (x, y) land on ``TEMPLATE_112 * size / 112``."""
    image = check_image(image, 0)
    points = np.asarray(landmarks, np.float64)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise InputError(f"similarity alignment: expected 5 finite (x, y) landmarks, got {points.tolist()}")
    matrix = similarity_transform(points, TEMPLATE_112 * (size / 112.0))
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def align_faces(image: np.ndarray, faces: Faces, config: AlignConfig) -> np.ndarray:
    """One (size, size, 3) uint8 face per row of ``faces``, as an (N, size, size, 3) array.

    >>> faces = Faces(boxes=np.array([[10, 10, 30, 30]]), scores=np.array([1.0]))
    >>> align_faces(np.zeros((50, 50, 3), np.uint8), faces, AlignConfig(image_size=64)).shape
    (1, 64, 64, 3)
    """
    size = config.image_size
    if len(faces) == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    if config.mode == "similarity":
        landmarks = faces.landmarks
        assert landmarks is not None  # Faces always fills it (NaN when unknown)
        if not np.isfinite(landmarks).all():
            raise InputError(
                "align.mode='similarity' needs landmarks, but some faces have none "
                "(the Haar detector gives none): use detector.kind=mtcnn or align.mode=crop"
            )
        return np.stack([similarity_align(image, points, size) for points in landmarks])
    return np.stack([crop_with_margin(image, box, config.margin, size) for box in faces.boxes])


def center_crop(image: np.ndarray, size: int, fraction: float) -> np.ndarray:
    """The central square, ``fraction`` of the shorter side, resized to (size, size, 3).

    The fallback when no face is found (LFW images are centred on the subject's face).

    >>> center_crop(np.zeros((250, 250, 3), np.uint8), 160, 0.5).shape
    (160, 160, 3)
    """
    image = check_image(image, 0)
    if not 0 < fraction <= 1:
        raise InputError(f"center_crop: expected 0 < fraction <= 1, got {fraction}")
    h, w = image.shape[:2]
    side = max(1, round(min(h, w) * fraction))
    top, left = (h - side) // 2, (w - side) // 2
    return _resize(image[top : top + side, left : left + side], size)
