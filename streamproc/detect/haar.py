"""OpenCV's frontal-face Haar cascade (Viola-Jones) behind the ``Detector`` interface.

A fast, weight-free fallback: boxes only (landmarks are NaN), so it suits ``align.mode=crop``.
Scores are the logistic of the cascade's last-stage weight, so a higher weight means a
more certain face, squashed into (0, 1); they are not calibrated like MTCNN's.

>>> from streamproc.config import DetectorConfig
>>> import numpy as np
>>> HaarDetector(DetectorConfig(kind="haar"))([np.zeros((64, 64, 3), np.uint8)])[0].boxes.shape
(0, 4)
"""

from __future__ import annotations

import cv2
import numpy as np

from streamproc.config import DetectorConfig
from streamproc.detect.base import Detector
from streamproc.errors import ModelError
from streamproc.types import Faces

CASCADE_FILE = "haarcascade_frontalface_default.xml"


class HaarDetector(Detector):
    """Haar-cascade face detector; ``HaarDetector(config)(images)`` gives one ``Faces`` per image.

    Uses ``config.min_face_size`` as the smallest window; MTCNN's thresholds and pyramid
    step do not apply (the cascade scans with ``scale_step`` and groups with ``min_neighbors``).

    Example:
        >>> detector = HaarDetector(DetectorConfig(kind="haar", min_face_size=40))
        >>> len(detector([np.full((120, 160, 3), 128, np.uint8)])[0])
        0
    """

    config: DetectorConfig
    min_window = 24  # the cascade's window (haarcascade_frontalface_default is trained on 24x24)
    scale_step = 1.1  # window growth between scans
    min_neighbors = 5  # overlapping hits needed to report a face

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        path = cv2.data.haarcascades + CASCADE_FILE  # type: ignore[attr-defined]
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise ModelError(f"could not load the Haar cascade {path}; reinstall opencv-python-headless")

    def _detect(self, images: list[np.ndarray]) -> list[Faces]:
        return self._detect_at(images, [1.0] * len(images))

    def _detect_at(self, images: list[np.ndarray], scales: list[float]) -> list[Faces]:
        return [self._one(image, scale) for image, scale in zip(images, scales, strict=True)]

    def _one(self, image: np.ndarray, scale: float) -> Faces:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        side = max(1, round(self.config.min_face_size * scale))
        rects, _, level_weights = self.cascade.detectMultiScale3(
            gray, self.scale_step, self.min_neighbors, minSize=(side, side), outputRejectLevels=True
        )
        if len(rects) == 0:
            return Faces.empty()
        xywh = np.asarray(rects, np.float32).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        weights = np.asarray(level_weights, np.float64).reshape(-1)
        scores = 1.0 / (1.0 + np.exp(-weights)) if len(weights) == len(boxes) else np.ones(len(boxes))
        order = np.argsort(-scores, kind="stable")
        return Faces(boxes=boxes[order], scores=scores[order].astype(np.float32))
