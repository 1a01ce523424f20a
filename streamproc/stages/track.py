"""The track stage: a per-stream tracker with constant-velocity prediction, IoU then centre distance.

On every detection pass (a frame the detect stage's schedule picked, or any frame that carries
faces) each live track predicts its box at the frame's pts from its last matched box and its
velocity; predictions and detections are paired by Hungarian matching on IoU
(``scipy.optimize.linear_sum_assignment``), pairs under ``iou_threshold`` rejected. Between
passes nothing is matched and nothing is missed: tracks just coast.

A face that moves about its own width between passes (detection on every 10th frame, a brisk
walk) overlaps its prediction little or not at all before the track knows its velocity. So a
second round pairs the tracks and detections the IoU round left, again by Hungarian matching, on
``centre_gap`` (centre distance in face sizes): a pair is allowed when the gap is at most
``max_face_speed`` face sizes per second since the track's last match and the two box sizes
differ by at most ``MAX_SIZE_RATIO``. ``max_face_speed=None`` leaves the IoU round alone.

* A detection nobody claims starts a *tentative* track. It gets an id (per stream, 0, 1, 2, ...)
  once it was matched on ``min_hits`` passes in a row; a tentative track that misses one pass is
  dropped silently. Faces of tentative tracks keep ``track_id == -1`` and are not embedded.
* A track is closed (its id listed in ``batch.closed_tracks``) when it went unmatched on more than
  ``max_missed`` passes in a row, or when more than ``max_gap_s`` seconds of pts passed since its
  last match. ``end_of_stream`` closes every track and resets the stream, so a replay of the same
  input yields the same ids (and the same event ids downstream).
* ``needs_embedding`` is True for a track's first ``AggregateConfig.n_frames`` faces of quality at
  least ``min_quality`` (all of them with ``recheck``), False otherwise, so the embed stage skips
  faces the aggregate stage would not use.

Example:
    >>> from streamproc.types import Faces, FrameBatch
    >>> tracker = TrackStage(TrackConfig())
    >>> faces = Faces(boxes=[[10, 10, 50, 50]], scores=[0.99])
    >>> batch = tracker(FrameBatch("cam", np.zeros((1, 64, 64, 3), np.uint8), [0.0], faces=faces))
    >>> batch.faces.track_id.tolist()
    [0]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from streamproc.stages.base import Stage
from streamproc.stages.config import AggregateConfig, DetectStageConfig, TrackConfig
from streamproc.stages.detect import detection_mask
from streamproc.types import Faces, FrameBatch

_FORBIDDEN = 1e6  # assignment cost of a pair the rules forbid
MAX_SIZE_RATIO = 2.0  # the centre round pairs no boxes whose sizes differ more than this


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (A, 4) with every box in ``b`` (B, 4), as (A, B), boxes x1 y1 x2 y2.

    >>> iou_matrix(np.array([[0.0, 0, 2, 2]]), np.array([[1.0, 0, 3, 2]])).round(4).tolist()
    [[0.3333]]
    """
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)[:, None]
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)[None, :]
    return inter / np.maximum(area_a + area_b - inter, 1e-12)


def face_size(boxes: np.ndarray) -> np.ndarray:
    """The size of each box (N, 4) as the side of a square of its area, at least 1e-6.

    >>> face_size(np.array([[0.0, 0, 4, 9]])).tolist()
    [6.0]
    """
    sides = np.clip(boxes[:, 2:] - boxes[:, :2], 0, None)
    return np.maximum(np.sqrt(sides.prod(axis=1)), 1e-6)


def centre_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from the centre of every box in ``a`` (A, 4) to the centre of every box in ``b``
    (B, 4), in sizes of the ``a`` box (``face_size``), as (A, B).

    >>> centre_gap(np.array([[0.0, 0, 10, 10]]), np.array([[30.0, 40, 40, 50]])).tolist()
    [[5.0]]
    """
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    centre_a, centre_b = (a[:, :2] + a[:, 2:]) / 2, (b[:, :2] + b[:, 2:]) / 2
    distance = np.linalg.norm(centre_a[:, None, :] - centre_b[None, :, :], axis=2)
    return distance / face_size(a)[:, None]


def _assign(cost: np.ndarray, allowed: np.ndarray) -> list[tuple[int, int]]:
    """(row, column) pairs of the least-cost assignment among the allowed ones."""
    rows, cols = linear_sum_assignment(np.where(allowed, cost, _FORBIDDEN))
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if allowed[r, c]]


@dataclass(frozen=True)
class TrackView:
    """A read-only snapshot of one live track (``track_id == -1`` while tentative)."""

    track_id: int
    box: tuple[float, float, float, float]
    first_pts: float
    last_pts: float
    hits: int
    missed: int
    embedded: int


@dataclass
class _Track:
    box: np.ndarray  # (4,) last matched box
    last_pts: float
    first_pts: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))  # pixels per second
    track_id: int = -1
    hits: int = 1
    missed: int = 0
    embedded: int = 0
    skipped: int = 0  # faces not embedded since the budget ran out (one in check_every is)

    def predict(self, pts: float) -> np.ndarray:
        return self.box + self.velocity * (pts - self.last_pts)

    def update(self, box: np.ndarray, pts: float, smoothing: float) -> None:
        dt = pts - self.last_pts
        if dt > 0:
            measured = (box - self.box) / dt
            self.velocity = (
                measured if self.hits == 1 else smoothing * measured + (1 - smoothing) * self.velocity
            )
        self.box, self.last_pts = box, pts
        self.hits += 1
        self.missed = 0

    def view(self) -> TrackView:
        x1, y1, x2, y2 = (float(v) for v in self.box)
        return TrackView(
            self.track_id,
            (x1, y1, x2, y2),
            self.first_pts,
            self.last_pts,
            self.hits,
            self.missed,
            self.embedded,
        )


@dataclass
class _Stream:
    tracks: list[_Track] = field(default_factory=list)
    next_id: int = 0
    next_frame: int = 0


@dataclass
class _Out:
    """What one batch's passes write: per-face columns and the ids closed so far."""

    track_id: np.ndarray
    needs_embedding: np.ndarray
    closed: list[int] = field(default_factory=list)


class TrackStage(Stage):
    """Writes ``faces.track_id`` / ``faces.needs_embedding`` and appends to ``batch.closed_tracks``.

    ``detect`` must be the detect stage's section (its ``every_k_frames`` says which frames were
    detection passes); ``aggregate`` says how many faces per track are worth embedding.

    Example:
        >>> tracker = TrackStage(TrackConfig(max_missed=2), detect=DetectStageConfig(every_k_frames=5))
        >>> tracker.tracks("cam")
        []
    """

    name = "track"

    def __init__(
        self,
        config: TrackConfig,
        *,
        detect: DetectStageConfig | None = None,
        aggregate: AggregateConfig | None = None,
    ):
        self.config = config
        self.detect = detect or DetectStageConfig(every_k_frames=1)
        self.aggregate = aggregate or AggregateConfig()
        self._streams: dict[str, _Stream] = {}
        self._ended: dict[str, int] = {}  # stream -> next free id, once its end reset it (see split)

    def tracks(self, stream_id: str) -> list[TrackView]:
        """The live tracks of one stream, tentative ones included."""
        state = self._streams.get(stream_id)
        return [] if state is None else [t.view() for t in state.tracks]

    def process(self, batch: FrameBatch) -> FrameBatch:
        if batch.stream_id not in self._streams:
            self._ended.pop(batch.stream_id, None)  # a replay: ids start again at 0
        state = self._streams.setdefault(batch.stream_id, _Stream())
        faces = batch.faces
        scheduled = batch.detected
        if scheduled is None:  # not stamped by a detect stage: the plain every-k rule
            scheduled = detection_mask(state.next_frame, len(batch), self.detect.every_k_frames)
        cuts = np.zeros(len(batch), bool) if batch.cuts is None else batch.cuts
        state.next_frame += len(batch)
        out = _Out(np.full(len(faces), -1, np.int64), np.zeros(len(faces), bool))
        frame_of = np.asarray(faces.frame_index)
        for i, pts in enumerate(batch.pts.tolist()):
            if cuts[i]:  # a new shot: nothing before it continues
                out.closed.extend(t.track_id for t in state.tracks if t.track_id >= 0)
                state.tracks = []
            rows = np.flatnonzero(frame_of == i)
            if scheduled[i] or len(rows):
                self._pass(state, faces, rows, pts, out)
            self._close_stale(state, pts, out)
        if batch.end_of_stream:
            out.closed.extend(t.track_id for t in state.tracks if t.track_id >= 0)
            self.reset(batch.stream_id)
            self._ended[batch.stream_id] = state.next_id
        tracked = dataclasses.replace(faces, track_id=out.track_id, needs_embedding=out.needs_embedding)
        return dataclasses.replace(batch, faces=tracked, closed_tracks=[*batch.closed_tracks, *out.closed])

    def _pass(self, state: _Stream, faces: Faces, rows: np.ndarray, pts: float, out: _Out) -> None:
        boxes = faces.boxes[rows].astype(np.float64)
        pairs = self._match(state.tracks, boxes, pts)
        claimed = {d for _, d in pairs}
        matched = {t for t, _ in pairs}
        for t, d in pairs:
            track = state.tracks[t]
            track.update(boxes[d], pts, self.config.velocity_smoothing)
            if track.track_id < 0 and track.hits >= self.config.min_hits:
                track.track_id, state.next_id = state.next_id, state.next_id + 1
            self._label(track, faces, int(rows[d]), out)
        survivors = []
        for t, track in enumerate(state.tracks):
            if t not in matched:
                track.missed += 1
                if track.track_id < 0:
                    continue  # tentative tracks must be matched on every pass
                if track.missed > self.config.max_missed:
                    out.closed.append(track.track_id)
                    continue
            survivors.append(track)
        for d in range(len(rows)):
            if d not in claimed:
                track = _Track(box=boxes[d], last_pts=pts, first_pts=pts)
                if self.config.min_hits <= 1:
                    track.track_id, state.next_id = state.next_id, state.next_id + 1
                survivors.append(track)
                self._label(track, faces, int(rows[d]), out)
        state.tracks = survivors

    def _match(self, tracks: list[_Track], boxes: np.ndarray, pts: float) -> list[tuple[int, int]]:
        """(track index, detection index) pairs: the IoU round, then the centre round on the rest."""
        if not tracks or not len(boxes):
            return []
        predicted = np.stack([t.predict(pts) for t in tracks])
        iou = iou_matrix(predicted, boxes)
        pairs = _assign(-iou, iou >= self.config.iou_threshold)
        speed = self.config.max_face_speed
        if speed is None:
            return pairs
        left_t = np.setdiff1d(np.arange(len(tracks)), [t for t, _ in pairs])
        left_d = np.setdiff1d(np.arange(len(boxes)), [d for _, d in pairs])
        if not len(left_t) or not len(left_d):
            return pairs
        gap = centre_gap(predicted[left_t], boxes[left_d])
        elapsed = np.array([pts - tracks[t].last_pts for t in left_t])
        ratio = face_size(predicted[left_t])[:, None] / face_size(boxes[left_d])[None, :]
        allowed = (gap <= speed * elapsed[:, None]) & (np.maximum(ratio, 1 / ratio) <= MAX_SIZE_RATIO)
        return pairs + [(int(left_t[r]), int(left_d[c])) for r, c in _assign(gap, allowed)]

    def _label(self, track: _Track, faces: Faces, row: int, out: _Out) -> None:
        if track.track_id < 0:
            return
        out.track_id[row] = track.track_id
        agg = self.aggregate
        assert faces.quality is not None  # Faces always fills it
        if faces.quality[row] < agg.min_quality:
            return
        wanted = agg.recheck or track.embedded < agg.n_frames
        if not wanted and self.config.appearance_distance is not None:
            track.skipped += 1  # past the budget: one face in check_every keeps the track honest
            wanted = track.skipped % self.config.check_every == 0
        if wanted:
            out.needs_embedding[row] = True
            track.embedded += 1

    def _close_stale(self, state: _Stream, pts: float, out: _Out) -> None:
        keep = []
        for track in state.tracks:
            if pts - track.last_pts > self.config.max_gap_s:
                if track.track_id >= 0:
                    out.closed.append(track.track_id)
            else:
                keep.append(track)
        state.tracks = keep

    def reset(self, stream_id: str) -> None:
        self._streams.pop(stream_id, None)
        self._ended.pop(stream_id, None)

    def split(self, stream_id: str, track_id: int) -> tuple[int, bool]:
        """A new id for the faces of ``track_id`` from now on (its appearance changed): the live
        track with that id takes it and embeds its next faces afresh. Returns ``(new id, live)``,
        ``live`` False when no live track has ``track_id`` any more (the id is still new). The guard
        runs batches behind the tracker: after the tracker met the stream's end, ids go on from
        where the stream stopped, never from 0."""
        if stream_id in self._ended and stream_id not in self._streams:
            new_id = self._ended[stream_id]
            self._ended[stream_id] = new_id + 1
            return new_id, False
        state = self._streams.setdefault(stream_id, _Stream())
        new_id, state.next_id = state.next_id, state.next_id + 1
        for track in state.tracks:
            if track.track_id == track_id:
                track.track_id, track.embedded, track.skipped = new_id, 0, 0
                return new_id, True
        return new_id, False

    def next_id(self, stream_id: str) -> int:
        """The id the stream's next confirmed track will get."""
        state = self._streams.get(stream_id)
        return 0 if state is None else state.next_id

    def continue_ids(self, stream_id: str, first_id: int) -> None:
        """Number the stream's new tracks from ``first_id`` on (no earlier id is given again)."""
        state = self._streams.setdefault(stream_id, _Stream())
        state.next_id = max(state.next_id, first_id)

    def close(self) -> None:
        self._streams.clear()
