"""The detector family: the base class checks inputs and outputs, subclasses compute.

A detector takes a list of RGB images (any sizes) and returns one ``Faces`` per image, with
``frame_index`` set to the image's position in the list and boxes clipped to the image.

With ``config.max_side`` set, the base class detects on a copy shrunk to that longer side and
maps boxes and landmarks back to the image's pixels (so crops are cut from the full image). It
never shrinks so far that ``config.min_face_size`` would fall under the detector's smallest
window (``min_window``): a face the config asks for stays findable, and the subclass searches
the copy for faces of ``min_face_size * scale`` only.

>>> import numpy as np
>>> class NoFaces(Detector):
...     def _detect(self, images):
...         return [Faces.empty() for _ in images]
>>> [len(f) for f in NoFaces()([np.zeros((4, 4, 3), np.uint8)] * 2)]
[0, 0]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import cv2
import numpy as np

from streamproc.config import DetectorConfig
from streamproc.errors import InputError, ModelError
from streamproc.types import Faces


def check_image(image: object, position: int) -> np.ndarray:
    """Return ``image`` when it is an (H, W, 3) uint8 array, else raise ``InputError``."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"image {position}: expected (H, W, 3) uint8 RGB, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise InputError(f"image {position}: expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    return image


def _clip(faces: Faces, height: int, width: int, position: int) -> Faces:
    boxes = faces.boxes.copy()
    np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
    clipped = Faces(
        boxes=boxes,
        scores=faces.scores,
        landmarks=faces.landmarks,
        frame_index=np.full(len(faces), position, np.int32),
        track_id=faces.track_id,
        embedding=faces.embedding,
        quality=faces.quality,
    )
    return clipped[(clipped.widths > 0) & (clipped.heights > 0)]


def shrink(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` resized by ``scale`` (area averaging); the image itself at scale 1."""
    if scale >= 1.0:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def enlarge(faces: Faces, small: tuple[int, ...], full: tuple[int, ...]) -> Faces:
    """``faces`` found in an image of shape ``small`` moved to the pixels of one of shape ``full``."""
    if small[:2] == full[:2]:
        return faces
    factor = np.array([full[1] / small[1], full[0] / small[0]], np.float32)
    landmarks = np.asarray(faces.landmarks) * factor
    return Faces(boxes=faces.boxes * np.tile(factor, 2), scores=faces.scores, landmarks=landmarks)


class Detector(ABC):
    """Finds faces in RGB images; ``detector(images)`` gives one ``Faces`` per image.

    Subclasses implement ``_detect(images)``, which sees only valid (H, W, 3) uint8 arrays and
    returns one ``Faces`` per image in image pixels; boxes may stick out of the image, the
    base class clips them and drops those left with no area. Subclasses whose search depends on
    the face size override ``_detect_at(images, scales)`` as well, to look for faces of
    ``min_face_size * scale`` in images shrunk by ``scale``.
    """

    config: DetectorConfig | None = None  # max_side and min_face_size (None: full size)
    min_window = 1  # the smallest face side (pixels) the detector finds at scale 1

    def __call__(self, images: Sequence[np.ndarray]) -> list[Faces]:
        if isinstance(images, np.ndarray) and images.ndim == 3:
            raise InputError(
                f"expected a sequence of (H, W, 3) uint8 RGB images, got one array of shape {images.shape}: "
                "wrap a single image in a list"
            )
        checked = [check_image(image, i) for i, image in enumerate(images)]
        if not checked:
            return []
        scales = [self.detect_scale(im.shape[0], im.shape[1]) for im in checked]
        small = [shrink(im, s) for im, s in zip(checked, scales, strict=True)]
        found = self._detect_at(small, scales)
        if len(found) != len(checked):
            raise ModelError(
                f"{type(self).__name__}: expected one Faces per image ({len(checked)}), got {len(found)}"
            )
        found = [enlarge(f, s.shape, im.shape) for f, s, im in zip(found, small, checked, strict=True)]
        pairs = enumerate(zip(found, checked, strict=True))
        return [_clip(faces, im.shape[0], im.shape[1], i) for i, (faces, im) in pairs]

    def detect_scale(self, height: int, width: int) -> float:
        """The factor an image of this size is shrunk by before detection (1 = full size)."""
        if self.config is None or self.config.max_side is None:
            return 1.0
        scale = self.config.max_side / max(height, width)
        return min(1.0, max(scale, self.min_window / self.config.min_face_size))

    def _detect_at(self, images: list[np.ndarray], scales: list[float]) -> list[Faces]:
        """Faces in ``images``, shrunk by ``scales`` from the caller's; in the shrunk pixels."""
        return self._detect(images)

    @abstractmethod
    def _detect(self, images: list[np.ndarray]) -> list[Faces]:
        """Faces in each image (one ``Faces`` per image, in the same order)."""
