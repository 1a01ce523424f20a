"""The embed stage: align the faces the tracker still wants and embed them in one model call.

``crops_for`` (which rows, which crops) and ``with_embeddings`` (put the rows back) are split
out so a pool of embedding workers can cut crops in one place and run the model in another.
Rows not embedded, and faces whose crop could not be cut (a box wholly outside the frame, no
landmarks in similarity mode), get NaN embeddings.

Example:
    >>> from streamproc.config import AlignConfig
    >>> faces = Faces(boxes=[[8, 8, 40, 40]], scores=[0.9])
    >>> batch = FrameBatch("cam", np.zeros((1, 48, 48, 3), np.uint8), [0.0], faces=faces)
    >>> rows, crops = crops_for(batch, AlignConfig(image_size=32))
    >>> rows.tolist(), crops.images.shape
    ([0], (1, 32, 32, 3))
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from streamproc.align import align_faces, crop_landmarks
from streamproc.config import AlignConfig
from streamproc.errors import InputError
from streamproc.models.embedder import Embedder
from streamproc.stages.base import Stage
from streamproc.types import EMBEDDING_DTYPE, Crops, Faces, FrameBatch

log = logging.getLogger(__name__)


def _cut(frame: np.ndarray, faces: Faces, config: AlignConfig) -> Crops:
    return Crops(align_faces(frame, faces, config), crop_landmarks(faces, config))


def _one_by_one(
    frame: np.ndarray, faces: Faces, rows: np.ndarray, config: AlignConfig
) -> tuple[list[int], list[Crops]]:
    """Crops of ``rows`` cut one face at a time, leaving out the faces that cannot be cut."""
    good, crops = [], []
    for r in rows.tolist():
        try:
            crops.append(_cut(frame, faces[np.array([r])], config))
            good.append(r)
        except InputError as exc:
            log.debug("face %d not embedded: %s", r, exc)
    return good, crops


def crops_for(batch: FrameBatch, config: AlignConfig) -> tuple[np.ndarray, Crops]:
    """``(rows, crops)``: face rows with ``needs_embedding`` and their crops (with landmarks)."""
    faces = batch.faces
    size = config.image_size
    wanted = np.flatnonzero(np.asarray(faces.needs_embedding))
    frame_of = np.asarray(faces.frame_index)
    rows: list[np.ndarray] = []
    crops: list[Crops] = []
    for frame in np.unique(frame_of[wanted]).tolist():
        here = wanted[frame_of[wanted] == frame]
        try:
            crops.append(_cut(batch.frames[frame], faces[here], config))
            rows.append(here)
        except InputError:  # some face of this frame cannot be cut: keep the others
            good, singles = _one_by_one(batch.frames[frame], faces, here, config)
            rows.append(np.array(good, np.int64))
            crops.extend(singles)
    if not crops:
        return np.zeros(0, np.int64), Crops(np.zeros((0, size, size, 3), np.uint8))
    return np.concatenate(rows).astype(np.int64), Crops.concat(crops)


def with_embeddings(
    batch: FrameBatch, rows: np.ndarray, embeddings: np.ndarray, model_version: str, dim: int
) -> FrameBatch:
    """A copy of ``batch`` whose faces carry ``embeddings`` at ``rows`` and NaN elsewhere."""
    embeddings = np.asarray(embeddings, EMBEDDING_DTYPE).reshape(len(rows), dim)
    column = np.full((len(batch.faces), dim), np.nan, EMBEDDING_DTYPE)
    column[rows] = embeddings
    faces = dataclasses.replace(batch.faces, embedding=column)
    return dataclasses.replace(batch, faces=faces, model_version=model_version)


class EmbedStage(Stage):
    """Fills ``faces.embedding`` for faces with ``needs_embedding``; sets ``batch.model_version``.

    Example:
        >>> stage = EmbedStage(AlignConfig(), Embedder())  # doctest: +SKIP
        >>> stage(batch).faces.embedding.shape  # doctest: +SKIP
        (3, 128)
    """

    name = "embed"

    def __init__(self, align_config: AlignConfig, embedder: Embedder):
        self.align_config = align_config
        self.embedder = embedder

    def process(self, batch: FrameBatch) -> FrameBatch:
        rows, crops = crops_for(batch, self.align_config)
        dim = self.embedder.card.embedding_dim
        embeddings = self.embedder(crops) if len(rows) else np.zeros((0, dim), np.float32)
        return with_embeddings(batch, rows, embeddings, self.embedder.version, dim)
