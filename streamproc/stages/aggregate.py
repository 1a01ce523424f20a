"""The aggregate stage: one embedding per track from the embeddings of its first faces.

Per (stream, track) it sums the first ``n_frames`` usable embeddings (finite rows, quality at
least ``min_quality``; weighted by quality when ``quality_weighted``), and the aggregate is that
mean, renormalised to unit length (the paper's YouTube Faces protocol averages the first 100
frames). Aggregates leave as ``Decision`` objects in ``batch.decisions`` with ``identity=None``,
``distance=nan``, ``gallery_version=''`` and ``embedding`` set; the match stage fills the rest.

Revisions, per track and model version:

* **revision 0** at the end of the first batch in which the track has ``min_frames`` faces
  (aggregating every face it has by then), or at once when a batch fills all ``n_frames``;
* **revision 1** the moment it reaches ``n_frames`` faces, or when it closes, unless it still
  has exactly the faces of revision 0 (then nothing: the match stage would learn nothing new);
* with ``recheck``, every further ``n_frames`` faces (and the rest at closing, if at least
  ``min_frames``) give revision 2, 3, ... over just those faces.

A track that closes with fewer than ``min_frames`` usable faces (but at least one) is decided at
close with what it has (``decide_short``, the default: a half-second appearance still gets a
decision); with ``decide_short=False`` it yields nothing. When ``batch.model_version`` changes under a live track, its
sum restarts under the new version (embeddings of two models are not averaged); event ids
include the version, so both versions' revisions are distinct events. No (stream, track,
model_version, revision) is ever yielded twice.

Example:
    >>> from streamproc.types import Faces
    >>> stage = AggregateStage(AggregateConfig(n_frames=2, min_frames=1))
    >>> faces = Faces(boxes=[[0, 0, 9, 9]], scores=[1.0], track_id=[0], embedding=[[0.0, 1.0]])
    >>> out = stage(FrameBatch("cam", np.zeros((1, 9, 9, 3), np.uint8), [0.5], faces=faces, model_version="v1"))
    >>> [(d.track_id, d.revision, d.n_frames, d.embedding.tolist()) for d in out.decisions]
    [(0, 0, 1, [0.0, 1.0])]
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np

from streamproc.stages.base import Stage
from streamproc.stages.config import AggregateConfig
from streamproc.types import EMBEDDING_DTYPE, Decision, Faces, FrameBatch

log = logging.getLogger(__name__)


@dataclass
class _TrackSum:
    first_pts: float
    last_pts: float
    model_version: str = ""
    total: np.ndarray | None = None  # (D,) weighted sum of the current window
    weight: float = 0.0
    count: int = 0  # faces in the current window
    revision: int = 0  # next revision to yield under model_version
    yielded_at: int = 0  # count when the current window last yielded (0 = not yet)
    done: bool = False  # the window is full and recheck is off: ignore further faces

    def restart(self, model_version: str) -> None:
        self.model_version, self.total, self.weight, self.count = model_version, None, 0.0, 0
        self.revision, self.yielded_at, self.done = 0, 0, False

    def add(self, embedding: np.ndarray, weight: float) -> None:
        vec = embedding.astype(np.float64) * weight
        self.total = vec if self.total is None else self.total + vec
        self.weight += weight
        self.count += 1

    def mean(self) -> np.ndarray:
        assert self.total is not None
        norm = float(np.linalg.norm(self.total))
        return (self.total / max(norm, 1e-12)).astype(EMBEDDING_DTYPE)


@dataclass
class _Stream:
    tracks: dict[int, _TrackSum] = field(default_factory=dict)
    closed: set[int] = field(default_factory=set)  # ids never to be revived (the tracker never reuses them)


class AggregateStage(Stage):
    """Appends per-track aggregates (``Decision`` with ``identity=None``) to ``batch.decisions``.

    Example:
        >>> AggregateStage(AggregateConfig(n_frames=100, min_frames=5)).config.n_frames
        100
    """

    name = "aggregate"

    def __init__(self, config: AggregateConfig):
        self.config = config
        self._streams: dict[str, _Stream] = {}

    def process(self, batch: FrameBatch) -> FrameBatch:
        sid = batch.stream_id
        state = self._streams.setdefault(sid, _Stream())
        decisions: list[Decision] = []
        for tid in self._accumulate(state, batch, decisions):
            decisions.extend(self._ready(sid, tid, state.tracks[tid], closing=False))
        closing = list(batch.closed_tracks)
        if batch.end_of_stream:
            closing.extend(t for t in state.tracks if t not in closing)
        for tid in closing:
            track = state.tracks.pop(tid, None)
            state.closed.add(tid)
            if track is not None:
                decisions.extend(self._ready(sid, tid, track, closing=True))
        if batch.end_of_stream:
            self.reset(sid)
        return dataclasses.replace(batch, decisions=[*batch.decisions, *decisions])

    def _usable(self, faces: Faces) -> np.ndarray:
        """(N,) bool: tracked faces with a finite embedding and enough quality."""
        quality = np.asarray(faces.quality)
        usable = (np.asarray(faces.track_id) >= 0) & (quality >= self.config.min_quality)
        if faces.embedding is None:
            return np.zeros(len(faces), bool)
        usable &= np.isfinite(faces.embedding).all(axis=1)
        if self.config.quality_weighted:
            usable &= quality > 0
        return usable

    def _accumulate(self, state: _Stream, batch: FrameBatch, out: list[Decision]) -> list[int]:
        """Add usable faces in frame order (full windows yield into ``out`` at once); the tracks touched."""
        faces = batch.faces
        track_ids = np.asarray(faces.track_id)
        pts = batch.pts[np.asarray(faces.frame_index)]
        usable = self._usable(faces)
        touched: list[int] = []
        for row in np.argsort(np.asarray(faces.frame_index), kind="stable").tolist():
            tid = int(track_ids[row])
            if tid < 0 or tid in state.closed:
                continue
            track = state.tracks.get(tid)
            if track is None:
                track = state.tracks[tid] = _TrackSum(first_pts=float(pts[row]), last_pts=float(pts[row]))
            track.first_pts = min(track.first_pts, float(pts[row]))
            track.last_pts = max(track.last_pts, float(pts[row]))
            if not usable[row]:
                continue
            assert faces.embedding is not None and faces.quality is not None
            weight = float(faces.quality[row]) if self.config.quality_weighted else 1.0
            if self._add(track, faces.embedding[row], weight, batch.model_version):
                out.extend(self._ready(batch.stream_id, tid, track, closing=False))
            if tid not in touched:
                touched.append(tid)
        return touched

    def _add(self, track: _TrackSum, embedding: np.ndarray, weight: float, model_version: str) -> bool:
        """Add one face; True when that filled the window."""
        if track.model_version != model_version:
            if track.count:
                log.info(
                    "track model version %s -> %s: aggregation restarts", track.model_version, model_version
                )
            track.restart(model_version)
        if track.done:
            return False
        if track.count >= self.config.n_frames:  # recheck: the full window was yielded, start the next
            track.total, track.weight, track.count, track.yielded_at = None, 0.0, 0, 0
        track.add(embedding, weight)
        return track.count >= self.config.n_frames

    def _ready(self, stream_id: str, tid: int, track: _TrackSum, *, closing: bool) -> list[Decision]:
        """The aggregates this track owes now (0, 1 or 2 of them)."""
        cfg = self.config
        out: list[Decision | None] = []
        short = closing and cfg.decide_short and track.revision == 0 and track.count > 0
        if (track.count < cfg.min_frames and not short) or track.count == track.yielded_at:
            return []
        if track.revision == 0:
            out.append(self._decision(stream_id, tid, track))
        full = track.count >= cfg.n_frames
        if (full or closing) and track.count != track.yielded_at:
            out.append(self._decision(stream_id, tid, track))
        if full and not cfg.recheck:
            track.done = True
        return [d for d in out if d is not None]

    def _decision(self, stream_id: str, tid: int, track: _TrackSum) -> Decision | None:
        key = (track.model_version, track.revision)
        track.revision += 1
        track.yielded_at = track.count
        return Decision(
            stream_id=stream_id,
            track_id=tid,
            first_pts=track.first_pts,
            last_pts=track.last_pts,
            identity=None,
            distance=float("nan"),
            n_frames=track.count,
            model_version=track.model_version,
            gallery_version="",
            revision=key[1],
            embedding=track.mean(),
        )

    def reset(self, stream_id: str) -> None:
        self._streams.pop(stream_id, None)

    def close(self) -> None:
        self._streams.clear()
