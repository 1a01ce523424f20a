"""Face detectors: one ``Detector`` interface, MTCNN and Haar behind it.

>>> from streamproc.config import DetectorConfig
>>> detector = build_detector(DetectorConfig(kind="haar"))
>>> type(detector).__name__
'HaarDetector'
"""

from __future__ import annotations

from pathlib import Path

from streamproc.config import DetectorConfig
from streamproc.detect.base import Detector
from streamproc.detect.haar import HaarDetector
from streamproc.detect.mtcnn import MTCNN
from streamproc.detect.nms import batched_nms, nms
from streamproc.errors import ConfigError

__all__ = ["MTCNN", "Detector", "HaarDetector", "batched_nms", "build_detector", "nms"]


def build_detector(config: DetectorConfig, weights_dir: Path | None = None) -> Detector:
    """The detector ``config.kind`` names; MTCNN weights default to the fetched cache."""
    if config.kind == "haar":
        return HaarDetector(config)
    if config.kind == "mtcnn":
        if weights_dir is None:
            from streamproc.models.fetch import mtcnn_weights_dir

            weights_dir = mtcnn_weights_dir()
        return MTCNN(config, weights_dir)
    raise ConfigError(f"detector.kind: expected 'mtcnn' or 'haar', got {config.kind!r}")
