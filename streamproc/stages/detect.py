"""The detect stage: run the face detector on the frames the stream's ``Schedule`` picks.

A batch stamped upstream (``batch.detected``, as the chain does) is detected on exactly those
frames; an unstamped one is scheduled here (every ``every_k_frames``-th frame and every shot cut,
see ``streamproc.stages.schedule``) and leaves stamped, so the tracker knows which frames were
detection passes. ``detection_mask`` is the plain every-k rule without cuts.
All selected frames of a batch go to the detector in one call. Frames in between get no faces:
the tracker keeps its tracks alive across them.

Quality of a face is ``score * min(1, min(w, h) / quality_face_size)``: confident, big faces
count most when the aggregate stage weights by quality.

Example:
    >>> detection_mask(first_frame=3, n_frames=5, every_k=3).tolist()
    [True, False, False, True, False]
"""

from __future__ import annotations

import dataclasses

import numpy as np

from streamproc.detect.base import Detector
from streamproc.stages.base import Stage
from streamproc.stages.config import DetectStageConfig
from streamproc.stages.schedule import Schedule
from streamproc.types import Faces, FrameBatch


def detection_mask(first_frame: int, n_frames: int, every_k: int) -> np.ndarray:
    """(n_frames,) bool: which frames, numbered from ``first_frame``, get a detector pass."""
    return (np.arange(first_frame, first_frame + n_frames) % every_k) == 0


def face_quality(faces: Faces, full_size: int) -> np.ndarray:
    """(N,) float32 in [0, 1]: detector score times a size term that saturates at ``full_size`` px."""
    side = np.minimum(faces.widths, faces.heights)
    return (np.clip(faces.scores, 0, 1) * np.clip(side / full_size, 0, 1)).astype(np.float32)


def stamp_faces(found: list[Faces], rows: np.ndarray, config: DetectStageConfig) -> Faces:
    """The detector's faces of frames ``rows`` of a batch (one ``Faces`` per row), as the batch's
    faces: those under ``min_score`` dropped, each with its frame, quality, no track yet."""
    parts = []
    for row, faces in zip(rows, found, strict=True):
        faces = faces[faces.scores >= config.min_score]
        faces.frame_index = np.full(len(faces), row, np.int32)
        faces.quality = face_quality(faces, config.quality_face_size)
        faces.track_id = np.full(len(faces), -1, np.int64)
        faces.needs_embedding = np.ones(len(faces), bool)
        parts.append(faces)
    return Faces.merge(parts) if parts else Faces.empty()


class DetectStage(Stage):
    """Sets ``batch.faces`` from one detector call over the batch's detection frames.

    Example:
        >>> from streamproc.detect import build_detector
        >>> from streamproc.config import DetectorConfig
        >>> stage = DetectStage(DetectStageConfig(every_k_frames=2), build_detector(DetectorConfig(kind="haar")))
        >>> batch = stage(FrameBatch("cam", np.zeros((3, 64, 64, 3), np.uint8), np.arange(3) / 25))
        >>> len(batch.faces)
        0
    """

    name = "detect"

    def __init__(self, config: DetectStageConfig, detector: Detector):
        self.config = config
        self.detector = detector
        self.schedule = Schedule(config.every_k_frames, config.cuts)

    def process(self, batch: FrameBatch) -> FrameBatch:
        if batch.detected is None or batch.cuts is None:  # not stamped upstream: schedule here
            detected, cuts = self.schedule(batch.stream_id, batch.frames)
            batch = dataclasses.replace(batch, detected=detected, cuts=cuts)
        assert batch.detected is not None
        faces = self._detect(batch, np.flatnonzero(batch.detected))
        if batch.end_of_stream:
            self.reset(batch.stream_id)
        return dataclasses.replace(batch, faces=faces)

    def _detect(self, batch: FrameBatch, selected: np.ndarray) -> Faces:
        if len(selected) == 0:
            return Faces.empty()
        return stamp_faces(self.detector([batch.frames[i] for i in selected]), selected, self.config)

    def reset(self, stream_id: str) -> None:
        self.schedule.reset(stream_id)

    def close(self) -> None:
        self.schedule = Schedule(self.config.every_k_frames, self.config.cuts)
