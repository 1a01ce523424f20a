"""The appearance guard: a track never carries two people.

The tracker links faces by their boxes before anything is embedded; boxes alone cannot tell two
people apart when one steps where the other stood (a cut the histogram test missed, two people
crossing). This stage sees each track's embeddings in frame order, keeps the track's running mean
embedding, and when a face lands farther than ``appearance_distance`` (squared L2) from it:

* the track is **split**: that face and every later face of the track get a new id, asked of
  ``on_split(stream_id, track_id) -> (new_id, live)`` (the tracker renumbers its live track, see
  ``TrackStage.split``; without a callback, ids count on from ``first_new_id``);
* the old id is listed in ``batch.closed_tracks`` (the aggregate stage decides it at once), and an
  old id already listed there (the tracker lost the track later in the batch) becomes the new one.

``remaps`` of the returned batch's stage (``last_remaps``) say ``old -> new`` for faces of the
track that are already tracked but not yet embedded (batches in flight), so their owner can
relabel them. Faces without an embedding never trigger a split but follow their track's new id.

Example:
    >>> from streamproc.types import Faces
    >>> guard = AppearanceGuard(1.0, first_new_id=10)
    >>> faces = Faces(boxes=[[0, 0, 9, 9]] * 2, scores=[1, 1], frame_index=[0, 1], track_id=[3, 3],
    ...               embedding=[[1.0, 0.0], [0.0, 1.0]])
    >>> out = guard(FrameBatch("cam", np.zeros((2, 9, 9, 3), np.uint8), [0.0, 0.04], faces=faces))
    >>> out.faces.track_id.tolist(), out.closed_tracks, guard.last_remaps
    ([3, 10], [3], {3: 10})
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import numpy as np

from streamproc.stages.base import Stage
from streamproc.types import FrameBatch

log = logging.getLogger(__name__)

OnSplit = Callable[[str, int], tuple[int, bool]]


class AppearanceGuard(Stage):
    """Splits a track whose newest face is far from its running mean embedding (see module doc)."""

    name = "guard"

    def __init__(
        self, appearance_distance: float | None, on_split: OnSplit | None = None, first_new_id: int = 0
    ):
        self.appearance_distance = appearance_distance
        self.on_split = on_split
        self._next_id = first_new_id
        self._sums: dict[str, dict[int, np.ndarray]] = {}  # stream -> track -> sum of unit embeddings
        self.last_remaps: dict[int, int] = {}
        self.splits = 0  # tracks split so far (for metrics and tests)

    def process(self, batch: FrameBatch) -> FrameBatch:
        self.last_remaps = {}
        faces = batch.faces
        if self.appearance_distance is None or faces.embedding is None or not len(faces):
            return self._forget(batch, batch)
        sums = self._sums.setdefault(batch.stream_id, {})
        labels = np.asarray(faces.track_id).copy()
        ended: list[int] = []  # ids whose person left the track in this batch
        current: dict[int, int] = {}  # original id -> the id its faces take now
        for row in np.argsort(np.asarray(faces.frame_index), kind="stable").tolist():
            original = int(labels[row])
            if original < 0:
                continue
            tid = current.get(original, original)
            vector = faces.embedding[row].astype(np.float64)
            if np.isfinite(vector).all() and np.any(vector):
                total = sums.get(tid)
                if total is not None and self._far(vector, total):
                    new_id = self._split(batch.stream_id, tid)
                    ended.append(tid)
                    current[original], tid = new_id, new_id
                    total = None
                sums[tid] = vector if total is None else total + vector
            labels[row] = tid
        self.last_remaps = {old: new for old, new in current.items() if old != new}
        lost = [current.get(t, t) for t in batch.closed_tracks]  # the tracker's closures: the newest id
        closed = ended + [t for t in lost if t not in ended]
        out = dataclasses.replace(
            batch, faces=dataclasses.replace(faces, track_id=labels), closed_tracks=closed
        )
        return self._forget(out, batch)

    def _far(self, vector: np.ndarray, total: np.ndarray) -> bool:
        mean = total / max(float(np.linalg.norm(total)), 1e-12)
        unit = vector / max(float(np.linalg.norm(vector)), 1e-12)
        assert self.appearance_distance is not None
        return float(np.sum((unit - mean) ** 2)) > self.appearance_distance

    def _split(self, stream_id: str, track_id: int) -> int:
        if self.on_split is not None:
            new_id, _ = self.on_split(stream_id, track_id)
        else:
            new_id, self._next_id = self._next_id, self._next_id + 1
        self._sums.get(stream_id, {}).pop(track_id, None)
        self.splits += 1
        log.info(
            "stream %s: track %d changed person; its faces go on as track %d", stream_id, track_id, new_id
        )
        return new_id

    def _forget(self, out: FrameBatch, batch: FrameBatch) -> FrameBatch:
        if batch.end_of_stream:
            self.reset(batch.stream_id)
            return out
        sums = self._sums.get(batch.stream_id, {})
        for tid in out.closed_tracks:
            sums.pop(tid, None)
        return out

    def reset(self, stream_id: str) -> None:
        self._sums.pop(stream_id, None)

    def close(self) -> None:
        self._sums.clear()
