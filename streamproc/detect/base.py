"""The detector family: the base class checks inputs and outputs, subclasses compute.

A detector takes a list of RGB images (any sizes) and returns one ``Faces`` per image, with
``frame_index`` set to the image's position in the list and boxes clipped to the image.

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

import numpy as np

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


class Detector(ABC):
    """Finds faces in RGB images; ``detector(images)`` gives one ``Faces`` per image.

    Subclasses implement ``_detect(images)``, which sees only valid (H, W, 3) uint8 arrays and
    returns one ``Faces`` per image in image pixels; boxes may stick out of the image, the
    base class clips them and drops those left with no area.
    """

    def __call__(self, images: Sequence[np.ndarray]) -> list[Faces]:
        if isinstance(images, np.ndarray) and images.ndim == 3:
            raise InputError(
                f"expected a sequence of (H, W, 3) uint8 RGB images, got one array of shape {images.shape}: "
                "wrap a single image in a list"
            )
        checked = [check_image(image, i) for i, image in enumerate(images)]
        if not checked:
            return []
        found = self._detect(checked)
        if len(found) != len(checked):
            raise ModelError(
                f"{type(self).__name__}: expected one Faces per image ({len(checked)}), got {len(found)}"
            )
        pairs = enumerate(zip(found, checked, strict=True))
        return [_clip(faces, im.shape[0], im.shape[1], i) for i, (faces, im) in pairs]

    @abstractmethod
    def _detect(self, images: list[np.ndarray]) -> list[Faces]:
        """Faces in each image (one ``Faces`` per image, in the same order)."""
