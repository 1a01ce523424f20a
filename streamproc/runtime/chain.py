"""The per-stream part of the pipeline, split around the models; and the run's summary types.

``StreamChain`` owns one source and runs the light, stateful stages of that stream in three
phases, so that the models can run elsewhere (in this process, or in pools of Ray actors serving
many streams):

* ``read()``: the next batch of the source; the frames the detect schedule picks (every
  ``every_k_frames``-th frame and every shot cut) leave as ``(K, H, W, 3)`` images with the
  batch's ``seq``. The batch waits inside the chain.
* ``track(seq, found)``: the detector's faces for those frames come back -> scores and quality ->
  tracker -> the face crops the tracker wants embedded leave with a ``Front`` record; the tracked
  batch waits inside the chain, its frames shrunk to placeholders.
* ``back(seq, embeddings)``: embeddings back in -> aggregate. Returns a ``Back`` record with the new
  aggregates (``Decision`` s still to be matched) and the closed tracks.

Each phase must see the batches in ``seq`` order; later phases may lag behind earlier ones
(several batches in flight: ``streamproc.runtime.pump`` schedules them). A call made after the
stream ended returns a record with ``seq == -1``. A source error (``DecodeError``,
``SourceDisconnected`` after its retries, any ``StreamprocError``) or a failing stage does not
escape: the chain closes the source, pushes an empty end-of-stream batch through the stages so
open tracks are decided, and marks that last record with the error. ``read(stop=True)`` ends a
stream the same way, without error (a live source has no end of its own).

Example:
    >>> chain = StreamChain(SourceConfig(uri="a.mp4"), load_config(None), "v1", 128)  # doctest: +SKIP
    >>> seq, images = chain.read()  # doctest: +SKIP
    >>> front, crops = chain.track(seq, detector(list(images)))  # doctest: +SKIP
    >>> back = chain.back(front.seq, embedder(crops))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from streamproc.config import Config
from streamproc.errors import ConfigError, StreamprocError
from streamproc.sources.config import SourceConfig
from streamproc.sources.source import VideoSource
from streamproc.stages.aggregate import AggregateStage
from streamproc.stages.detect import stamp_faces
from streamproc.stages.embed import crops_for, with_embeddings
from streamproc.stages.guard import AppearanceGuard
from streamproc.stages.schedule import Schedule
from streamproc.stages.track import TrackStage
from streamproc.types import Crops, Decision, Faces, FrameBatch

log = logging.getLogger(__name__)

_COUNTERS = ("frames_decoded", "frames_dropped", "decode_errors", "reconnects")


@dataclass
class Front:
    """What ``StreamChain.front`` reports about one batch (the crops travel separately)."""

    stream_id: str
    seq: int  # -1: the stream had already ended, nothing was read
    frames: int  # frames in the batch
    faces: int  # faces detected
    crops: int  # crops cut for embedding
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds on this batch
    counters: dict[str, int] = field(default_factory=dict)  # source counters since the last front
    open_tracks: int = 0  # confirmed tracks of the stream still open after this batch
    next_track_id: int = 0  # the id the stream's next confirmed track will get (0 once it ended)


@dataclass
class Back:
    """What ``StreamChain.back`` reports: the new aggregates and the tracks that ended."""

    stream_id: str
    seq: int
    decisions: list[Decision]
    closed_tracks: list[int]
    end_of_stream: bool
    embedded: int  # faces that got an embedding
    seconds: dict[str, float] = field(default_factory=dict)
    queued: int = 0  # batches of the stream still waiting inside the chain (read or tracked, not aggregated)
    model_version: str = ""  # of the batch's embeddings
    tracked: np.ndarray = field(
        default_factory=lambda: np.zeros((0, 6))
    )  # pts, track id, x1 y1 x2 y2 per face

    def as_batch(self) -> FrameBatch:
        """A frameless batch carrying the decisions, for the match and emit stages."""
        return FrameBatch(
            self.stream_id,
            np.zeros((0, 1, 1, 3), np.uint8),
            np.zeros(0),
            end_of_stream=self.end_of_stream,
            closed_tracks=list(self.closed_tracks),
            decisions=list(self.decisions),
        )


@dataclass
class StreamSummary:
    """How one stream went; ``error`` is None when it ended normally (or was stopped)."""

    stream_id: str
    uri: str
    frames: int = 0
    faces: int = 0
    tracks: int = 0
    decisions: int = 0
    reconnects: int = 0
    dropped: int = 0
    error: str | None = None
    wall_s: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class RunSummary:
    """The outcome of a run: one ``StreamSummary`` per source, the emitted decisions (the latest
    ``outlet.DECISIONS_KEPT`` of a long run; the per-stream counts cover all of them), wall time.

    Example:
        >>> s = RunSummary("local", {"cam": StreamSummary("cam", "cam.mp4", frames=10)}, [], 2.0)
        >>> s.ok, s.frames, s.fps
        (True, 10, 5.0)
    """

    runner: str
    streams: dict[str, StreamSummary]
    decisions: list[Decision]
    wall_s: float

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> list[str]:
        return [sid for sid, s in self.streams.items() if s.error is not None]

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.streams.values())

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0


def check_sources(sources: tuple[SourceConfig, ...]) -> None:
    """At least one source, and distinct stream ids (stages key their state by stream id)."""
    if not sources:
        raise ConfigError("no sources: give at least one with --source URI or sources: in the config")
    seen: set[str] = set()
    for source in sources:
        if source.stream_id in seen:
            raise ConfigError(
                f"two sources have stream id {source.stream_id!r}: set a distinct stream_id for each"
            )
        seen.add(source.stream_id)


@dataclass
class _Read:
    """A batch read but not yet tracked."""

    batch: FrameBatch
    error: str | None
    counters: dict[str, int]
    seconds: dict[str, float]


class StreamChain:
    """One stream's source and its schedule, tracker, guard and aggregator, split around the models
    (the phases: module docstring)."""

    def __init__(self, source: SourceConfig, config: Config, model_version: str, embedding_dim: int):
        self.source = VideoSource(source)
        self.stream_id = source.stream_id
        self.detect_config = config.detect
        self.track_stage = TrackStage(config.track, detect=config.detect, aggregate=config.aggregate)
        self.aggregate = AggregateStage(config.aggregate)
        self.schedule = Schedule(config.detect.every_k_frames, config.detect.cuts)
        self.guard = AppearanceGuard(config.track.appearance_distance, on_split=self.track_stage.split)
        self.align = config.align
        self.model_version = model_version
        self.embedding_dim = embedding_dim
        self._batches: Iterator[FrameBatch] | None = None
        self._read: dict[int, _Read] = {}
        self._waiting: dict[int, tuple[FrameBatch, np.ndarray]] = {}
        self._next_read = self._next_track = self._next_back = 0
        self._last_counters = dict.fromkeys(_COUNTERS, 0)
        self.reading_done = False  # the last batch was read
        self.finished = False  # the last batch was tracked

    def resume(self, first_track_id: int) -> None:
        """Go on after a restart of this chain's process. A file starts over and gives its tracks the
        same ids again, so its repeated decisions keep their event ids and are dropped as repeats;
        a live source shows new faces, numbered from ``first_track_id`` so that no new decision
        takes the event id of one already out."""
        if self.source.config.is_live:
            self.track_stage.continue_ids(self.stream_id, first_track_id)

    # --- read ---------------------------------------------------------------------------------------
    def read(self, stop: bool = False) -> tuple[int, np.ndarray]:
        """The next batch: its ``seq`` and the ``(K, H, W, 3)`` frames to run the detector on."""
        if self.reading_done:  # asked for ahead of knowing the stream had ended: nothing there
            return -1, _NO_IMAGES
        started = time.perf_counter()
        batch, error = (None, None) if stop else self._next_batch()
        if batch is None:  # ended, stopped or failed: an empty last batch closes every open track
            self.source.close()
            batch = _closing(self.stream_id)
        detected, cuts = self.schedule(self.stream_id, batch.frames)
        batch = dataclasses.replace(batch, detected=detected, cuts=cuts)
        if batch.end_of_stream:
            self.schedule.reset(self.stream_id)
        seconds = {"decode": time.perf_counter() - started}
        selected = np.flatnonzero(detected)
        seq = self._next_read
        self._next_read += 1
        self._read[seq] = _Read(batch, error, self._counter_deltas(), seconds)
        self.reading_done = batch.end_of_stream
        if self.reading_done:
            self.source.close()
        return seq, batch.frames[selected]

    def _next_batch(self) -> tuple[FrameBatch | None, str | None]:
        if self._batches is None:
            self._batches = iter(self.source)
        try:
            return next(self._batches), None
        except StopIteration:
            return None, None
        except StreamprocError as exc:
            log.warning("stream %s failed: %s", self.stream_id, exc)
            return None, f"{type(exc).__name__}: {exc}"

    # --- track --------------------------------------------------------------------------------------
    def track(self, seq: int, found: list[Faces]) -> tuple[Front, Crops]:
        """Batch ``seq`` with the detector's ``found`` faces (one per picked frame): detect stage,
        tracker, crops. Returns the ``Front`` record and the ``Crops`` to embed."""
        if self.finished:  # the stream ended at an earlier batch (a stage failed): nothing more
            self._read.pop(seq, None)
            return Front(self.stream_id, -1, 0, 0, 0), Crops(_NO_IMAGES)
        self._check_order("track", seq, self._next_track)
        self._next_track += 1
        read = self._read.pop(seq)
        try:
            tracked, rows, crops = self._detect_track_crop(read.batch, found, read.seconds)
        except StreamprocError as exc:
            if read.batch.end_of_stream and len(read.batch) == 0:
                raise  # the closing batch itself failed: nothing sensible is left to do
            log.warning("stream %s: %s; closing it", self.stream_id, exc)
            self._end(read, exc)
            tracked, rows, crops = self._detect_track_crop(read.batch, [], read.seconds)
        self._waiting[seq] = (tracked, rows)
        self.finished = tracked.end_of_stream
        front = Front(
            stream_id=self.stream_id,
            seq=seq,
            frames=len(read.batch),
            faces=len(tracked.faces),
            crops=len(rows),
            error=read.error,
            seconds=read.seconds,
            counters=read.counters,
            open_tracks=sum(1 for t in self.track_stage.tracks(self.stream_id) if t.track_id >= 0),
            next_track_id=self.track_stage.next_id(self.stream_id),
        )
        return front, crops

    def detector_failed(self, seq: int, exc: Exception) -> None:
        """The detector failed on batch ``seq`` (read, not tracked): the stream ends there, with
        ``exc`` as its error; batches read after it are dropped."""
        self._end(self._read[seq], exc)

    def _end(self, read: _Read, exc: Exception) -> None:
        """The stream ends at this batch: it becomes the empty closing batch, with ``exc`` as its error."""
        read.batch, read.error = _closing(self.stream_id), f"{type(exc).__name__}: {exc}"
        self.source.close()
        self.reading_done = True

    def _detect_track_crop(
        self, batch: FrameBatch, found: list[Faces], seconds: dict[str, float]
    ) -> tuple[FrameBatch, np.ndarray, Crops]:
        t0 = time.perf_counter()
        rows = np.flatnonzero(batch.detected) if batch.detected is not None else np.zeros(0, np.int64)
        faces = stamp_faces(found, rows, self.detect_config)
        tracked = self.track_stage(dataclasses.replace(batch, faces=faces))
        t2 = time.perf_counter()
        rows, crops = crops_for(tracked, self.align)
        t3 = time.perf_counter()
        seconds.update(track=t2 - t0, crop=t3 - t2)
        light = np.zeros((len(tracked), 1, 1, 3), np.uint8)  # frames are not needed any more
        return dataclasses.replace(tracked, frames=light), rows, crops

    def _counter_deltas(self) -> dict[str, int]:
        stats = self.source.stats
        out = {}
        for key in _COUNTERS:
            out[key] = int(stats.get(key, 0)) - self._last_counters[key]
            self._last_counters[key] = int(stats.get(key, 0))
        return out

    def _check_order(self, phase: str, seq: int, expected: int) -> None:
        if seq != expected:
            raise RuntimeError(
                f"stream {self.stream_id}: {phase}({seq}) out of order, expected {phase}({expected})"
            )

    # --- back ---------------------------------------------------------------------------------------
    def back(self, seq: int, embeddings: np.ndarray, model_version: str | None = None) -> Back:
        """Attach the embeddings of batch ``seq`` (rows in the order of its crops) and aggregate.

        ``model_version`` names the model that made them (default: the chain's); during a rolling
        upgrade it changes between batches, and the aggregate stage restarts those tracks' averages.
        """
        version = model_version or self.model_version
        self._check_order("back", seq, self._next_back)
        if seq not in self._waiting:
            raise RuntimeError(f"stream {self.stream_id}: back({seq}) before track({seq})")
        tracked, rows = self._waiting.pop(seq)
        self._next_back += 1
        started = time.perf_counter()
        embeddings = np.asarray(embeddings, np.float32).reshape(len(rows), self.embedding_dim)
        embedded = with_embeddings(tracked, rows, embeddings, version, self.embedding_dim)
        guarded = self.guard(embedded)
        self._relabel_waiting(self.guard.last_remaps)
        aggregated = self.aggregate(guarded)
        return Back(
            stream_id=self.stream_id,
            seq=seq,
            decisions=list(aggregated.decisions),
            closed_tracks=list(aggregated.closed_tracks),
            end_of_stream=aggregated.end_of_stream,
            embedded=len(rows),
            seconds={"aggregate": time.perf_counter() - started},
            queued=len(self._read) + len(self._waiting),
            model_version=version,
            tracked=_tracked_rows(guarded),
        )

    def _relabel_waiting(self, remaps: dict[int, int]) -> None:
        """Batches tracked but not yet embedded carry a split track's old id: give them the new one."""
        if not remaps:
            return
        for seq, (tracked, rows) in self._waiting.items():
            ids = np.asarray(tracked.faces.track_id).copy()
            for old, new in remaps.items():
                ids[ids == old] = new
            faces = dataclasses.replace(tracked.faces, track_id=ids)
            closed = [remaps.get(t, t) for t in tracked.closed_tracks]
            self._waiting[seq] = (dataclasses.replace(tracked, faces=faces, closed_tracks=closed), rows)

    def close(self) -> None:
        self.source.close()
        self._read.clear()
        self._waiting.clear()


_NO_IMAGES = np.zeros((0, 1, 1, 3), np.uint8)


def _tracked_rows(batch: FrameBatch) -> np.ndarray:
    """(N, 6) float64 rows ``pts, track_id, x1, y1, x2, y2`` of the batch's tracked faces."""
    faces = batch.faces
    keep = np.asarray(faces.track_id) >= 0
    pts = batch.pts[np.asarray(faces.frame_index)[keep]] if len(batch.pts) else np.zeros(0)
    ids = np.asarray(faces.track_id)[keep].astype(np.float64)
    return (
        np.column_stack([pts, ids, faces.boxes[keep].astype(np.float64)]) if keep.any() else np.zeros((0, 6))
    )


def _closing(stream_id: str) -> FrameBatch:
    return FrameBatch(stream_id, _NO_IMAGES, np.zeros(0), end_of_stream=True)
